"""The model commands: ``convert`` (a colbert-az checkpoint into a pylate folder), ``verify`` (parity with the model
card's code, or of an exported encoder with torch) and ``export`` (ONNX / OpenVINO graphs)."""

from __future__ import annotations

import argparse
import json

from colbert_az_pylate.cli.common import EXIT_PARITY_FAILED, add_encoder_arguments, progress
from colbert_az_pylate.errors import DataFormatError, InvalidArgumentError, first_line


def read_probes(path: str | None) -> list[str] | None:
    """The probe texts of ``--probes`` (one per line, blank lines skipped), or ``None`` without the flag."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"probe file {path} is not UTF-8 text ({first_line(exc)})") from exc
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read probe file {path}: {exc.strerror or first_line(exc)}") from exc
    if not texts:
        raise DataFormatError(f"probe file {path} holds no text; put one probe text per line")
    return texts


def cmd_convert(args: argparse.Namespace) -> int:
    """``colbert-az convert``: write the converted folder, verified unless ``--no-verify``."""
    from colbert_az_pylate.conversion import convert

    report = convert(
        args.source,
        args.output,
        revision=args.revision,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        force=args.force,
        probes=read_probes(args.probes),
        dataset=args.dataset,
        on_step=progress(not args.json),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.parity is None or report.parity.passed else EXIT_PARITY_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    """``colbert-az verify``: plain pylate against the model card's code (or ``--encoder`` against torch)."""
    if args.encoder != "torch":
        return _verify_encoder(args)
    from colbert_az_pylate.conversion import verify

    progress(not args.json)(f"verifying {args.model} against the model card's code")
    report = verify(args.model, args.reference, probes=read_probes(args.probes), dataset=args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.passed else EXIT_PARITY_FAILED


def _verify_encoder(args: argparse.Namespace) -> int:
    """``verify --encoder onnx|openvino``: the exported graph against pylate's torch encoder, within its budget."""
    from colbert_az_pylate.encoders import check_encoder, verify_encoder

    encoder, quantize = check_encoder(args.encoder, args.quantize)
    if args.reference:
        raise InvalidArgumentError("--reference is the model card's code; with --encoder the reference is torch")
    progress(not args.json)(f"verifying the {encoder} encoder of {args.model} against pylate's torch encoder")
    report = verify_encoder(args.model, encoder, quantize, probes=read_probes(args.probes), dataset=args.dataset)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.passed else EXIT_PARITY_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    """``colbert-az export``: the backbone's ONNX (and OpenVINO int8) graphs beside the pylate files."""
    from colbert_az_pylate.encoders.export import export_model

    step = progress(not args.json)
    folder, record = export_model(
        args.model, args.output, args.encoder, args.quantize, overwrite=args.overwrite, on_step=step
    )
    if args.json:
        print(json.dumps({"folder": str(folder), **record.to_dict(), "written": record.written}, indent=2))
        return 0
    if not record.written:
        print(f"nothing to export: {folder}/encoders already holds these graphs of these weights")
    else:
        graphs = ", ".join(f"{key} ({record.graphs[key]})" for key in sorted(record.graphs))
        print(f"exported into {folder}/encoders: {graphs}; wrote {', '.join(record.written)}")
    quantize = f" --quantize {args.quantize}" if args.quantize else ""
    print(f"check it with: colbert-az verify {args.output or args.model} --encoder {args.encoder}{quantize}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``convert``, ``verify`` and ``export`` to the ``colbert-az`` sub-commands."""
    convert = _add_convert_parser(commands)
    verify = _add_verify_parser(commands)
    _add_export_parser(commands)
    for sub in (convert, verify):
        _add_probe_arguments(sub)


def _add_convert_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    convert = commands.add_parser(
        "convert",
        help="convert a colbert-az checkpoint into a folder plain pylate loads",
        description="Convert backbone + projection.pt into a pylate folder that scores exactly like the "
        "model card's code; verified before it is written.",
    )
    convert.add_argument("source", help="hub id (LocalDoc/colbert-az) or local folder in the colbert-az layout")
    convert.add_argument("output", help="folder to write (must not exist unless --overwrite)")
    convert.add_argument("--revision", help="hub revision (branch, tag or commit)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    convert.add_argument("--no-verify", action="store_true", help="skip the parity check (not recommended)")
    convert.add_argument("--force", action="store_true", help="write the output even if parity fails")
    convert.set_defaults(handler=cmd_convert)
    return convert


def _add_verify_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    verify = commands.add_parser(
        "verify",
        help="check that plain pylate on a converted folder reproduces the model card's code",
        description="Compare pylate (in its own process) with the model card's reference code on probe texts.",
    )
    verify.add_argument("model", help="converted folder (or the hub id of one)")
    verify.add_argument("--reference", help="colbert-az folder the reference runs on (default: MODEL itself)")
    add_encoder_arguments(verify, "check this exported encoder against pylate's torch encoder instead (its budget)")
    verify.set_defaults(handler=cmd_verify)
    return verify


def _add_export_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export the backbone to ONNX (and int8 for OpenVINO) for fast CPU encoding, beside the pylate files",
        description="Write MODEL's backbone as an ONNX graph (and, with --encoder openvino --quantize int8, its "
        "int8-weight graph) into "
        "OUTPUT/encoders (default: MODEL/encoders); the folder still loads in plain pylate and the card's code.",
    )
    export.add_argument("model", help="converted folder, raw colbert-az layout or hub id")
    export.add_argument("output", nargs="?", help="new folder: MODEL's pylate files plus the export (default: MODEL)")
    export.add_argument("--encoder", required=True, choices=["onnx", "openvino"], help="the runtime to export for")
    export.add_argument(
        "--quantize",
        choices=["int8", "bf16", "int8-query"],
        help="also write the int8-weight graph, or the static int8 query graph (int8-query) (--encoder openvino)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT folder")
    export.add_argument("--json", action="store_true", help="print the export record as JSON")
    export.set_defaults(handler=cmd_export)


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """``--probes``, ``--dataset`` and ``--json``: what ``convert`` and ``verify`` check parity on and print."""
    parser.add_argument(
        "--probes", help="file with one probe text per line (default: the edge cases and sentences shipped inside)"
    )
    parser.add_argument("--dataset", help="AZ-MIRAGE dataset.json whose texts are added as extra probes (optional)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
