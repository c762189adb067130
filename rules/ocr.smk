# Rules of the corpus run (`snakemake ocr`, not part of `all`): the page images of `ocr.input`
# read with the bundle `ocr.bundle`, in shards of `ocr.shard_size` pages (one `ocr_shard` job
# each), then the summary (rule `ocr`). See effocr/corpus.py and config/README.md, section ocr.
#
# The shard plan is computed here, read-only, from the listing and the records of the shards
# already done (effocr.corpus.plan_shards): finished shards keep their pages, so a rerun runs
# only unfinished shards, and pages added later only new ones. The training DAG is not needed:
# the bundle is an input path (naming `results/bundle` makes `ocr` depend on export_onnx).

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


rule ocr_shard:
    input:
        bundle=OCR["bundle"] or [],
        pages=ocr_shard_images,
    output:
        f"{OCR_OUT}/{SHARDS_DIR}/{{shard}}.json",
    log:
        f"{OCR_OUT}/logs/ocr_shard_{{shard}}.log",
    benchmark:
        f"{OCR_OUT}/benchmarks/ocr_shard_{{shard}}.tsv"
    conda:
        ENVS["report"]
    container:
        CONTAINER
    threads: OCR["workers"]
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        code=code_version("effocr.corpus"),
        pages=lambda wildcards: [[p.image, p.name] for p in ocr_shard_pages(wildcards)],
        out_dir=OCR_OUT,
        formats=OCR["formats"],
    script:
        "../workflow_scripts/ocr_shard.py"


rule ocr:
    input:
        records=ocr_records,
    output:
        summary=f"{OCR_OUT}/{SUMMARY_JSON}",
        table=f"{OCR_OUT}/{SUMMARY_TABLE}",
    log:
        f"{OCR_OUT}/logs/ocr.log",
    benchmark:
        f"{OCR_OUT}/benchmarks/ocr.tsv"
    conda:
        ENVS["report"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    params:
        code=code_version("effocr.corpus"),
        problems=lambda wildcards: ocr_plan().problems,
    script:
        "../workflow_scripts/ocr_summary.py"
