# Helpers of rules/ocr.smk (kept apart from the rules: Snakemake's linter wants
# functions and rules in separate files). Included by rules/ocr.smk itself, so the stage
# file works whatever the order of the includes in the Snakefile.

import functools

from effocr.corpus import SHARDS_DIR, SUMMARY_JSON, SUMMARY_TABLE, plan_corpus

OCR = config["ocr"]
OCR_OUT = OCR["output"] if OCR["output"] is not None else f"{RES}/ocr"


@functools.cache
def ocr_plan():
    """The corpus's `ShardPlan`, computed once per Snakemake process, when `ocr` is wanted."""
    if not OCR["input"] or not OCR["bundle"]:
        raise WorkflowError(
            "the ocr target needs ocr.input (a folder, list file or METS file of page images) "
            "and ocr.bundle (a bundle folder), e.g. "
            "snakemake ocr --config ocr='{input: scans, bundle: results/bundle}' "
            "(config/README.md, section ocr)"
        )
    try:
        return plan_corpus(OCR, OCR_OUT)
    except EffOCRError as exc:
        raise WorkflowError(str(exc)) from None


def ocr_shard_pages(wildcards):
    shards = ocr_plan().shards
    if wildcards.shard not in shards:
        raise WorkflowError(f"shard {wildcards.shard} is not in the corpus's plan")
    return shards[wildcards.shard]


def ocr_shard_images(wildcards):
    # A listed image that is missing is that page's failure, reported in the summary.
    return [p.image for p in ocr_shard_pages(wildcards) if os.path.exists(p.image)]


def ocr_records(wildcards):
    return [f"{OCR_OUT}/{SHARDS_DIR}/{s}.json" for s in ocr_plan().shards]


wildcard_constraints:
    shard="[0-9]+",
