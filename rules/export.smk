# Rules of the export stage (see docs/architecture.md).

from effocr.artifacts import INDEX, INDEX_LABELS, MODEL


rule export_bundle:
    """Export recognizer and localizer to ONNX, check them against PyTorch on test-split
    lines, and write the inference bundle (nothing is written when the check fails)."""
    input:
        recognizer=f"{PATHS['recognizer_pass2']}/{MODEL}",
        index=multiext(f"{PATHS['reference_index']}/", INDEX, INDEX_LABELS),
        # Our trained localizer, or the ONNX one of localizer.onnx_model (then not trained).
        localizer=LOCALIZER_MODEL,
        test=PATHS["split"]["test"],
        # Glyph crops that calibrate the int8 recognizer (export.quantize).
        calibration=PATHS["split"]["val"],
        # The character language model (rules/lm.smk), shipped in the bundle as lm.json.
        lm=PATHS["lm"],
        # ONNX models made elsewhere, when the config names them (still parity-checked).
        given_onnx=[
            config["export"][k]
            for k in ("recognizer_onnx", "localizer_onnx")
            if config["export"][k]
        ],
        # The line detector and the test pages of its parity check (line_detector.enabled).
        line_detector=(
            [f"{PATHS['line_detector']}/{MODEL}"]
            if config["line_detector"]["enabled"]
            else []
        ),
        pages=(
            [f"{PATHS['pages']}/test/pages.json"]
            if config["line_detector"]["enabled"]
            else []
        ),
    output:
        directory(PATHS["bundle"]),
    log:
        log_path("export_bundle"),
    benchmark:
        benchmark_path("export_bundle")
    conda:
        ENVS["export"]
    container:
        CONTAINER
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **SECTIONS.params(
            "export",
            "infer",
            "localizer",
            "crops",
            dataset=LINE_KEYS,
            lm=("enabled", "weight", "k", "beam", "margin", "lexicon_margin"),
            line_detector=("line_margin", "max_line_tilt", "cut_height"),
        ),
        code=code_version("effocr.export"),
        index_dir=lambda wildcards, input: os.path.dirname(input.index[0]),
    script:
        "../workflow_scripts/export_bundle.py"
