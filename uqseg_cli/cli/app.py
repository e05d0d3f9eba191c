"""The `uqseg` Typer application: stages registered in pipeline order, errors as one line."""

from __future__ import annotations

import importlib
import os
import sys

import typer

try:  # typer >= 0.29 bundles its own click; the command objects are of that click
    from typer import _click as click
    from typer._click.shell_completion import CompletionItem
except ImportError:  # pragma: no cover - older typer on the real click
    import click
    from click.shell_completion import CompletionItem

from typer.core import TyperGroup

from uqseg_cli import __version__, signals
from uqseg_cli.errors import EXIT_CASE_FAILED, EXIT_USAGE, UqsegError, disk_full_message, is_disk_full

# Subcommand modules in pipeline order; each exposes `register(app)`. A stage is listed only when it works.
STAGES: list[str] = [
    "models",
    "train",
    "predict",
    "import",
    "sample",
    "uncertainty",
    "aggregate",
    "score",
    "explain",
    "evaluate",
    "export",
    "merge",
    "info",
    "demo",
]

# One-line descriptions for `uqseg --help` and shell completion, so that listing the stages imports nothing heavy
# (torch, scipy, umap): a stage module is imported only when its command runs or its own --help is asked for.
SUMMARIES: dict[str, str] = {
    "models": "List the segmentation architectures with parameter counts and input-size rules.",
    "train": "Train a segmentation network (or an ensemble / K fold members) on images or volumes with masks.",
    "predict": "Segment images or volumes with a checkpoint: predict.h5 (image, probabilities, references, raters).",
    "import": "Build predict.h5 from another tool's predictions (nnU-Net npz/pkl, NIfTI or PNG maps).",
    "sample": "Bayesian sampling (MC dropout, ensemble, TTA) into running sums: samples.h5.",
    "uncertainty": "Uncertainty maps (confidence, entropy, MI, EPKL, ...) from samples.h5: uncertainty.h5.",
    "aggregate": "Condense uncertainty maps into per-case scores (regions, volumes, a combined score).",
    "score": "Predict the Dice of every case from its segmentation and uncertainty (and image), without ground truth.",
    "explain": "Grad-CAM, UMAP, plots and report.html for the quality predictions: explain/.",
    "evaluate": "Evaluate predictions against several raters (the CURVAS protocol): metrics.csv.",
    "export": "Write maps (segmentation, probabilities, uncertainty, Grad-CAM) as NIfTI on the source affine, or PNG.",
    "merge": "Join the part files of a sharded stage run into one file.",
    "info": "Show what a stage file holds: stage, config, lineage, cases and arrays.",
    "demo": "Run the whole pipeline on built-in synthetic data and summarise what it found.",
}

# Stages whose module name differs from the command (``import`` is a Python keyword).
MODULES: dict[str, str] = {"import": "import_"}


# `-h` is `--help` on the root and on every stage.
CONTEXT_SETTINGS: dict = {"help_option_names": ["-h", "--help"]}


def _split_default(text: str) -> tuple[str, str | None]:
    """``"Output, e.g. x (default: all)."`` → ``("Output, e.g. x.", "all")``: a default written into a help text
    as ``[default: …]`` or ``(default: …)`` (brackets may nest), taken out so that it is shown the one standard way.
    """
    low = text.lower()
    for opener in ("[default", "(default"):
        start = low.find(opener)
        if start < 0:
            continue
        depth, end = 0, -1
        for i in range(start, len(text)):
            if text[i] in "[(":
                depth += 1
            elif text[i] in "])":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end < 0:
            continue
        value = text[start + len(opener) : end].lstrip(":").strip()
        rest = (text[:start].rstrip() + text[end + 1 :]).strip()
        for bad, good in ((" .", "."), ("..", "."), (" ;", ";"), (" ,", ","), (". .", ".")):
            rest = rest.replace(bad, good)
        return rest, value
    return text, None


def polish_help(cmd) -> None:
    """Every option of a stage shows its default as ``[default: …]``, and rich markup never eats a ``[…]``.

    A default given in the help text (``(default: all)``, ``[default: ./predict.h5]``) replaces typer's (which
    is empty for a ``None`` default); an option without a written default and with a ``None`` default shows
    ``[default: none]``. Plain on/off flags show nothing (they are off unless given).
    """
    from rich.markup import escape

    if cmd.help:
        # A blank line more after the first paragraph: typer dedents the rest of the text as one block, which
        # strips the indentation of an Examples block that directly follows the first paragraph.
        first, sep, rest = escape(cmd.help).partition("\n\n")
        cmd.help = first + (sep + "\n" + rest if sep else "")
    for p in cmd.params:
        if getattr(p, "param_type_name", "") != "option" or p.name == "help":
            continue
        text, written = _split_default(p.help or "")
        flag = bool(getattr(p, "is_flag", False)) and not getattr(p, "secondary_opts", None)
        if written is None and not flag and p.default is None and not p.required:
            written = "none"
        if written is not None:
            p.show_default = False
            text = f"{text} [default: {written}]".strip()
        p.help = escape(text)


def command_help(name: str, doc: str | None) -> str:
    """The ``--help`` text of a stage: its line of ``SUMMARIES`` (the one place it is written), then the command's
    docstring, which goes on from there without restating it (tests/cli/test_summaries.py)."""
    return SUMMARIES[name] + (f"\n\n{reflow(doc)}" if doc else "")


def reflow(doc: str) -> str:
    """The docstring's prose paragraphs joined into one line each (the help renderer keeps source line breaks,
    which wrapped mid-sentence); paragraphs with indented lines (examples, lists) stay as written."""
    import inspect

    paras = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if any(ln.startswith((" ", "-")) for ln in p.splitlines()) else " ".join(
        ln.strip() for ln in p.splitlines()) for p in paras)


def load_command(name: str) -> click.Command:
    """Import the module of stage ``name``, register its command on a fresh Typer app and return the click command,
    its help made of ``SUMMARIES`` and the docstring and polished (:func:`polish_help`)."""
    sub = typer.Typer(
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings=CONTEXT_SETTINGS,
    )
    importlib.import_module(f"uqseg_cli.cli.{MODULES.get(name, name)}").register(sub)
    cmd = typer.main.get_command(sub)
    cmd = cmd.commands[name] if hasattr(cmd, "commands") else cmd
    cmd.help = command_help(name, cmd.help)
    polish_help(cmd)
    return cmd


class LazyStages(TyperGroup):
    """Stages in pipeline order, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in STAGES:
            self.commands[name] = load_command(name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SUMMARIES.get(n) or self.get_command(ctx, n).get_short_help_str(100)) for n in STAGES]
        with formatter.section("Commands (in pipeline order)"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str):
        items = [CompletionItem(n, help=SUMMARIES.get(n)) for n in STAGES if n.startswith(incomplete)]
        return items + [i for i in click.Command.shell_complete(self, ctx, incomplete)]

    def _main_shell_completion(self, ctx_args, prog_name: str, complete_var: str | None = None) -> None:
        """click's ``_UQSEG_COMPLETE=<shell>_source|<shell>_complete`` (see cli/completion.py); typer's reversed
        ``source_<shell>``/``complete_<shell>`` (``uqseg --install-completion``) as before."""
        from uqseg_cli.cli.completion import click_instruction, run

        var = complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper()
        parsed = click_instruction(os.environ.get(var))
        if parsed is not None:
            sys.exit(run(self, ctx_args, prog_name, var, *parsed))
        super()._main_shell_completion(ctx_args, prog_name, complete_var)


app = typer.Typer(
    cls=LazyStages,
    name="uqseg",
    help="Uncertainty-aware segmentation quality: how good is a segmentation nobody has checked, "
    "and how sure is the model? Stages pass HDF5 files; tables are CSV.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"uqseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(
        False, "--debug",
        help="Show full tracebacks on errors (also for each failed case). Environment form: UQSEG_DEBUG=1 "
        "(e.g. in a SLURM job script).",
    ),
) -> None:
    """Uncertainty-aware segmentation quality prediction (2D photos and 3D CT)."""
    if debug:
        os.environ["UQSEG_DEBUG"] = "1"


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    signals.reset()
    signals.install()
    try:
        _main()
    finally:
        signals.restore()  # in-process callers (tests, notebooks) get their own handlers back


def _main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("UQSEG_DEBUG") == "1"
    try:
        rc = app(standalone_mode=False)
    except SystemExit:
        raise
    except (KeyboardInterrupt, Exception) as exc:
        code = _failure(exc, debug)
        if code is None:
            raise
        sys.exit(code)
    if rc in (130, 143):  # typer turns KeyboardInterrupt (SIGINT, SIGTERM via signals) into a quiet Exit(130)
        sys.exit(_interrupted())
    sys.exit(rc if isinstance(rc, int) else 0)


def _interrupted(exc: BaseException | None = None) -> int:
    """Say that a signal ended the run; 130 (SIGINT) or 143 (SIGTERM)."""
    code = signals.exit_code(exc)
    typer.echo("uqseg: terminated" if code != 130 else "uqseg: interrupted", err=True)
    return code


def _failure(exc: BaseException, debug: bool) -> int | None:
    """Say what went wrong in one line and return the exit code; None: let the exception through (``--debug``)."""
    if isinstance(exc, UqsegError):
        if debug:
            return None
        typer.echo(f"uqseg: error: {exc}", err=True)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return _interrupted(exc)
    if isinstance(exc, OSError):
        return None if debug else _os_error(exc)
    return _other_failure(exc, debug)


def _os_error(exc: OSError) -> int:
    if is_disk_full(exc):
        typer.echo(f"uqseg: error: {disk_full_message(exc.filename or 'output', exc)}", err=True)
        return EXIT_CASE_FAILED
    where = f"{exc.filename}: " if exc.filename else ""
    typer.echo(f"uqseg: error: {where}{exc.strerror or exc}", err=True)
    return EXIT_USAGE


def _other_failure(exc: BaseException, debug: bool) -> int | None:
    """click/typer usage errors (their own message, exit 2), aborts and exits; anything else in one line."""
    if hasattr(exc, "show") and hasattr(exc, "exit_code"):
        exc.show()
        return exc.exit_code
    name = type(exc).__name__
    if name == "Abort":  # click turns KeyboardInterrupt (SIGINT, or SIGTERM via signals) into Abort
        return _interrupted(exc)
    if name == "Exit" and hasattr(exc, "exit_code"):
        return exc.exit_code
    if debug:
        return None
    if is_disk_full(exc):
        typer.echo(f"uqseg: error: {disk_full_message('output', exc)}", err=True)
        return EXIT_CASE_FAILED
    first = (str(exc).strip().splitlines() or [""])[0]
    typer.echo(f"uqseg: error: {name}: {first} (run with --debug for the traceback)", err=True)
    return EXIT_USAGE
