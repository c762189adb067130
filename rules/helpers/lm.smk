# Helpers of rules/lm.smk (functions apart from rules, as Snakemake's linter wants).

from effocr.synth.text import shipped_text_path


def lm_text_files():
    """Running text trained on: `lm.text`, and the synthetic text source when the dataset is
    the synthetic one (its lines are drawn from it; a user's dataset has only its lines).
    """
    files = list(config["lm"]["text"])
    if SYNTHETIC_DATASET:
        files.append(
            config["synth"]["text_source"] or str(shipped_text_path(config["language"]))
        )
    return files
