"""Work crossing to and from other tools: nanoGPT out_dirs and their `tee`'d logs brought
into runs/ as finished runs (nanogpt_run.py, nanogpt_log.py), and a run's model taken to
Hugging Face transformers (hf_export.py, hf_tokenizer.py)."""
