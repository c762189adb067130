# Rules of the corpus run (`snakemake ocr`, not part of `all`): the page images of `ocr.input`
# read with the bundle `ocr.bundle`, in shards of `ocr.shard_size` pages (one `ocr_shard` job
# each), then the summary (rule `ocr`). See effocr/corpus.py and config/README.md, section ocr.
#
# The shard plan is computed while the DAG is built, read-only, from the listing and the
# records of the shards already done (effocr.corpus.plan_shards): finished shards keep
# their pages, so a rerun runs only unfinished shards, and pages added later only new ones. The training DAG is not needed:
# the bundle is an input path (naming `results/bundle` makes `ocr` depend on export_bundle).


include: "helpers/ocr.smk"


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
        # The pages, the output folder and the bundle are the plan's, the record's path and
        # the input: of the `ocr` section, only the formats change what a shard writes.
        **SECTIONS.params(ocr=("formats",)),
        code=code_version("effocr.corpus"),
        pages=lambda wildcards: [[p.image, p.name] for p in ocr_shard_pages(wildcards)],
        # The output folder, from the record's path (shards/<id>.json under it).
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
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
