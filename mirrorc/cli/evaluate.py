"""`mirrorc evaluate`: accuracies by onnxruntime on a build's ONNX files (mirrorc.evaluate), and split
execution checked against mirrornet.onnx."""

from __future__ import annotations

import sys

import click

from mirrorc.cli.common import echo_json, user_errors


def register(main: click.Group) -> None:
    @main.command("evaluate")
    @click.argument("build_dir", type=click.Path(file_okay=False, path_type=str))
    @click.option("--data", required=True, help="the dataset the build was compiled with (name or path)")
    @click.option("--data-dir", default=None, help="folder holding the named datasets  [default: $MIRRORC_DATA]")
    @click.option("--no-split-check", is_flag=True, help="skip the split-execution agreement check (TA simulator)")
    @click.option(
        "--split-images",
        type=click.IntRange(min=1),
        default=None,
        help="check split execution on the first N test images  [default: all]",
    )
    @click.option(
        "--limit-test",
        type=click.IntRange(min=1),
        default=None,
        help="evaluate on the first N test images only  [default: all]",
    )
    @click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
    @user_errors
    def evaluate_cmd(
        build_dir: str,
        data: str,
        data_dir: str | None,
        no_split_check: bool,
        split_images: int | None,
        limit_test: int | None,
        as_json: bool,
    ) -> None:
        """Test accuracy of BUILD_DIR's unprotected model, backbone alone and MirrorNet, by onnxruntime."""
        from pathlib import Path

        import onnx

        from mirrorc.errors import MirrorcError
        from mirrorc.evaluate import evaluate, format_evaluation, model_input_shape
        from mirrorc.train.data import load_dataset
        from passes import contract

        mirrornet = Path(build_dir) / "mirrornet.onnx"
        if not mirrornet.is_file():
            raise MirrorcError(f"{build_dir}: no mirrornet.onnx (is it a `mirrorc compile` output directory?)")
        try:
            model = onnx.load(str(mirrornet), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError and friends
            raise MirrorcError(f"{mirrornet}: not a readable ONNX model ({e})") from None
        num_classes = contract.declared_num_classes(model, str(mirrornet))
        dataset = load_dataset(
            data,
            data_dir=data_dir,
            input_shape=model_input_shape(mirrornet),
            num_classes=num_classes,
            limit_test=limit_test,
        )
        result = evaluate(
            build_dir, dataset.x_test, dataset.y_test, split_check=not no_split_check, split_images=split_images
        )
        result["data"] = data
        if as_json:
            echo_json(result)
        else:
            click.echo(format_evaluation(result))
        sys.stdout.flush()
        split = result.get("split_execution")
        if split and split["agree"] != split["images"]:
            click.echo(
                f"mirrorc: error: split execution disagrees with mirrornet.onnx on "
                f"{split['images'] - split['agree']} of {split['images']} images",
                err=True,
            )
            sys.exit(1)
