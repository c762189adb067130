# Helpers of rules/lm.smk (functions apart from rules, as Snakemake's linter wants).

from effocr.synth.text import shipped_text_path


def lm_text_files():
    """Running text trained on: `lm.text`, and the synthetic text source when the models learn
    from lines drawn from it: the dataset is the synthetic one, or they are fine-tuned from a
    synthetic base (`init_from: synthetic`, or `auto` on a small dataset). A dataset of the
    user's own otherwise brings only its lines.
    """
    files = list(config["lm"]["text"])
    if SYNTHETIC_DATASET or INIT_FROM == SYNTHETIC:
        files.append(
            config["synth"]["text_source"] or str(shipped_text_path(config["language"]))
        )
    return files
