"""The attacks `mirrorc attack` knows, by name, apart from thief.py: the CLI reads them when it starts,
and thief.py pulls in onnx."""

LABELLED_ATTACKS = ("finetune_all", "retrain_head", "replace_cpm")
ALL_ATTACKS = ("as_is", *LABELLED_ATTACKS, "distill", "scratch", "scratch_oracle")
QUERY_ATTACKS = ("extract",)  # spend many TA queries per image: run only when named
