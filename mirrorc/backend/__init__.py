"""The secure half's build: split and lowering driven through the passes, the OP-TEE TA writer and
the host C compiler cache."""
