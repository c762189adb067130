# Rules of the recognizer stage (see docs/architecture.md): first pass, hard-negative mining,
# second pass with hard negatives, reference index. The training rules resume from
# checkpoint.pt (deliberately not an output: Snakemake would delete it before a rerun).

from effocr.artifacts import (
    HARD_NEGATIVES,
    INDEX,
    INDEX_LABELS,
    INDEX_META,
    RECOGNIZER_OUTPUTS,
)
from effocr.artifacts import MODEL, in_dir

# Torch threads plus DataLoader workers, at most 8; for English one core fewer than --cores, so
# that train_localizer (one thread) trains beside the recognizer passes instead of before them:
# on 2 cores that takes the demo from 5.3 to 3.5 minutes (threads_beside_one).
RECOGNIZER_THREADS = threads_beside_one(8)
# The keys that shape only the reference index's vectors: changing them rebuilds the index,
# not the models; the training steps get every other recognizer key.
INDEX_KEYS = (
    "reference_crops",
    "reference_crop_weight",
    "reference_prototypes",
    "reference_prototype_weight",
)
TRAINING_KEYS = [k for k in SECTIONS.recognizer.as_dict() if k not in INDEX_KEYS]


rule train_recognizer:
    """First pass: SupCon training on renders and real training crops."""
    input:
        manifest=PATHS["recognizer_dataset"],
        init_from=init_from_input("recognizer"),
    output:
        **in_dir(PATHS["recognizer_pass1"], RECOGNIZER_OUTPUTS),
    log:
        log_path("train_recognizer"),
    benchmark:
        benchmark_path("train_recognizer")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        **SECTIONS.params("fonts", "run", recognizer=TRAINING_KEYS),
        code=code_version("effocr.recognizer.train"),
        init_from=INIT_FROM_PATH,
        init_from_sha256=init_from_checksum("recognizer"),
    script:
        "../workflow_scripts/train_recognizer.py"


rule mine_hard_negatives:
    """Query real training crops against the first-pass index; write the hard-negative sets."""
    input:
        model=f"{PATHS['recognizer_pass1']}/{MODEL}",
        manifest=PATHS["recognizer_dataset"],
    output:
        hard_negatives=PATHS["hard_negatives"],
    log:
        log_path("mine_hard_negatives"),
    benchmark:
        benchmark_path("mine_hard_negatives")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        **SECTIONS.params("fonts", "run", recognizer=TRAINING_KEYS),
        code=code_version("effocr.recognizer.hard_negatives"),
    script:
        "../workflow_scripts/mine_hard_negatives.py"


rule train_recognizer_hard_negatives:
    """Second pass: hard-negative sets inserted into the batches (fresh model by default)."""
    input:
        manifest=PATHS["recognizer_dataset"],
        hard_negatives=PATHS["hard_negatives"],
        # Only read with recognizer.hard_negatives_fine_tune; always listed so the DAG is the same.
        pass1=f"{PATHS['recognizer_pass1']}/{MODEL}",
        # Without hard_negatives_fine_tune, pass 2 starts from the base too.
        init_from=init_from_input("recognizer"),
    output:
        **in_dir(PATHS["recognizer_pass2"], RECOGNIZER_OUTPUTS),
    log:
        log_path("train_recognizer_hard_negatives"),
    benchmark:
        benchmark_path("train_recognizer_hard_negatives")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        **SECTIONS.params("fonts", "run", recognizer=TRAINING_KEYS),
        code=code_version("effocr.recognizer.train"),
        init_from=INIT_FROM_PATH,
        init_from_sha256=init_from_checksum("recognizer"),
    script:
        "../workflow_scripts/train_recognizer.py"


rule build_reference_index:
    """Embed the reference font renders with the second-pass model into a FAISS index."""
    input:
        model=f"{PATHS['recognizer_pass2']}/{MODEL}",
        renders=PATHS["renders_manifest"],
        # Only when crops go into the reference vectors: new data need not rebuild it otherwise.
        crops=(
            PATHS["recognizer_dataset"]
            if config["recognizer"]["reference_crops"]
            else []
        ),
    output:
        index=f"{PATHS['reference_index']}/{INDEX}",
        labels=f"{PATHS['reference_index']}/{INDEX_LABELS}",
        meta=f"{PATHS['reference_index']}/{INDEX_META}",
    log:
        log_path("build_reference_index"),
    benchmark:
        benchmark_path("build_reference_index")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        **SECTIONS.params("fonts", "run", recognizer=("device", *INDEX_KEYS)),
        code=code_version("effocr.recognizer.index"),
    script:
        "../workflow_scripts/build_reference_index.py"
