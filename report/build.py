"""The report: one command turns the logged runs into the TP's report and, on request, the submission zip.

    python report/build.py                                      # runs/ -> report/build/report.md, .html, figures/
    python report/build.py --run 20250101-120000                # that run rather than the latest, where it exists
    python report/build.py --zip --name Dupont --first-name Pierre   # + Dupont-Pierre-travail-TP1.zip

It reads what the scripts logged under ``--runs``: TensorBoard event files (every point, nothing
down-sampled), each run's ``metrics.json`` and ``results.json``, the grid's ``table1.csv``/``table2.csv``
and the figures; the written answers come from ``report/answers/``. It writes ``report.md``, a
self-contained ``report.html`` (figures embedded) and the PNG figures under ``--out``. Each script's
latest run is used unless ``--run`` names one. A missing result never fails the build: its section says
so and gives the command that produces it; a corrupt or foreign file under ``runs/`` is named in one
line and skipped. The sections, and what each reads, are listed in ``report/sections.py``.

The zip holds the sources (``*.py``, Markdown, requirements, configuration), ``report.md``,
``report.html`` and ``figures/`` under one folder ``<Name>-<Firstname>-travail-TP1/``, and none of
``data/``, ``checkpoints/``, ``runs/`` (raw event files), ``grades/`` or caches.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

from report.runs import FIGURE_SUFFIXES, Notices, RunIndex  # noqa: E402
from report.sections import (  # noqa: E402
    EXERCISES,
    GRID_FOLDER,
    LABS,
    BuildContext,
    Section,
    claimed_scripts,
    demote_headings,
    generic_run,
    reproduction_commands,
    strip_comments,
    table,
)
from utils.io import atomic_write, write_text_atomic  # noqa: E402

DEFAULT_RUNS, DEFAULT_OUT = "runs", "report/build"
ARCHIVE_SUFFIX = "travail-TP1"
# Sources are these kinds of files; results, data, weights and caches never are.
SOURCE_SUFFIXES = {".py", ".md", ".txt", ".ini", ".cfg", ".toml", ".yml", ".yaml", ".sh", ".ipynb"}
SOURCE_NAMES = {".gitignore", "Makefile", "LICENSE"}
SOURCE_HIDDEN_FOLDERS = {".ci"}  # the only hidden folder that holds sources (the CI entry point)
EXCLUDED_TOP_FOLDERS = {"data", "runs", "checkpoints", "grades"}
EXCLUDED_FOLDERS = {"__pycache__", "venv", "env", "node_modules", "build", "dist"}
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
BAD_NAME_CHARACTERS = re.compile(r"[\\/:*?\"<>|\x00-\x1f]")

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62em; margin: 2em auto;
       padding: 0 1em; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; }
blockquote { border-left: 4px solid #d08a00; margin: 1em 0; padding: 0.2em 1em; background: #fff8e6; }
"""


# --------------------------------------------------------------------------- the Markdown
def render_section(ctx: BuildContext, section: Section) -> str | None:
    """A section's Markdown (answer, then results), or ``None`` for an optional lab that has not run."""
    body = section.render(ctx, section)
    if body is None:
        return None
    parts = [f"### {section.title}\n"]
    if section.code:
        parts.append("Code: " + ", ".join(f"`{path}`" for path in section.code) + ".\n")
    # Q5 fills its answer's placeholders itself; every other answer is shown as written.
    if section.answer and section.answer not in ctx.answers_used:
        answer = ctx.answer(section.answer, section.answer_required)
        if answer:
            parts.append(answer)
    if body:
        parts.append(body)
    return "\n".join(parts)


def runs_used_table(ctx: BuildContext) -> str:
    rows = []
    for section, runs in ctx.index.used.items():
        for run in runs:
            rows.append((section, f"`{run.directory.as_posix()}`", run.finished, run.data_source or "-",
                         "dry run" if run.dry_run else ""))
    if not rows:
        return f"> No run found under `{ctx.index.root.as_posix()}`: every section below says what to run.\n"
    return table(("section", "run", "last written", "data", "note"), rows)


def build_markdown(ctx: BuildContext, title: str, author: str | None) -> str:
    chapters = []
    for chapter in EXERCISES:
        sections = [render_section(ctx, section) for section in chapter.sections]
        chapters.append(f"## {chapter.title}\n\n" + "\n".join(part for part in sections if part))

    lab_parts, labs_not_run = [], []
    for section in LABS:
        rendered = render_section(ctx, section)
        if rendered is None:
            labs_not_run.append(f"- {section.title}: {ctx.commands_text(section.commands)}")
        else:
            lab_parts.append(rendered)
    labs = "## Optional labs\n\n" + "\n".join(lab_parts)
    if labs_not_run:
        labs += "\nNot run (each adds its section here once it has run):\n\n" + "\n".join(labs_not_run) + "\n"
    chapters.append(labs)

    others = []
    for script in ctx.index.scripts():
        if script not in claimed_scripts():
            run = ctx.index.select(script)
            if run is not None:
                others.append(f"### `{script}`\n\n" + generic_run(ctx, f"other_{script}", run, script))
    if others:
        chapters.append("## Other runs\n\n" + "\n".join(others))

    unused_answers = sorted(path for path in ctx.answers_dir.glob("*.md") if path.name not in ctx.answers_used)
    if unused_answers:
        chapters.append("## Other answers\n\n" + "\n".join(
            demote_headings(strip_comments(path.read_text(encoding="utf-8")), 2) for path in unused_answers))

    commands = ["pip install -r requirements.txt"]
    commands += [command.for_runs(ctx.runs_flag_value) for command in reproduction_commands()]
    runs_option = f" --runs {ctx.runs_flag_value}" if ctx.runs_flag_value else ""
    commands.append(f"python report/build.py{runs_option} --zip --name NAME --first-name FIRSTNAME")
    chapters.append("## Reproducing this report\n\nFrom a fresh clone, on a CPU or a GPU, offline:\n\n```bash\n"
                    + "\n".join(commands) + "\n```\n")

    header = [f"# {title}\n"]
    if author:
        header.append(f"**{author}**\n")
    header.append(f"*Built on {time.strftime('%Y-%m-%d %H:%M')} by `python report/build.py` from "
                  f"`{ctx.index.root.as_posix()}`: every number, table and figure below is read from the logged "
                  f"runs.*\n")
    if any(run.dry_run for runs in ctx.index.used.values() for run in runs):
        header.append("> Some runs below are **dry runs** (`--dry-run`): they check the code path and their "
                      "numbers are not results.\n")
    header.append("## Runs used\n\n" + runs_used_table(ctx))
    return "\n".join(header) + "\n" + "\n".join(chapters)


# --------------------------------------------------------------------------- the HTML
def markdown_to_html(markdown_text: str, base_dir: Path, title: str) -> str:
    """A self-contained HTML page: every ``<img>`` whose source lies under ``base_dir`` becomes a data URI."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "sane_lists"])

    def embed(match: re.Match[str]) -> str:
        source = html.unescape(match.group(2))
        path = base_dir / source
        if "://" in source or source.startswith("data:") or not path.is_file():
            return match.group(0)
        mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{match.group(1)}data:{mime};base64,{data}{match.group(3)}'

    body = re.sub(r'(<img\b[^>]*\bsrc=")([^"]+)(")', embed, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# --------------------------------------------------------------------------- the zip
def is_virtualenv(folder: Path) -> bool:
    return (folder / "pyvenv.cfg").is_file()


def source_files(root: Path, excluded: list[Path]) -> list[Path]:
    """The repository's source files under ``root`` (relative paths, sorted): code, Markdown, configuration.

    Left out: ``data/``, ``runs/``, ``checkpoints/``, ``grades/`` at the top, the ``excluded`` folders
    (the report's output), caches, virtual environments, hidden folders other than ``.ci/``, and every
    file that is not source (event files, checkpoints, images, archives).
    """
    excluded = [path.resolve() for path in excluded]
    found = []

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            relative = entry.relative_to(root)
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if (entry.name in EXCLUDED_FOLDERS or entry.name.endswith(".egg-info")
                        or (entry.name.startswith(".") and entry.name not in SOURCE_HIDDEN_FOLDERS)
                        or (len(relative.parts) == 1 and entry.name in EXCLUDED_TOP_FOLDERS)
                        or entry.resolve() in excluded or is_virtualenv(entry)):
                    continue
                walk(entry)
            elif entry.suffix in SOURCE_SUFFIXES or entry.name in SOURCE_NAMES or (
                    relative.parts[0] in SOURCE_HIDDEN_FOLDERS):
                found.append(relative)

    walk(root)
    return found


def check_person_name(flag: str, value: str | None) -> str:
    value = (value or "").strip()
    if not value or BAD_NAME_CHARACTERS.search(value):
        raise SystemExit(f"error: {flag} must be a non-empty name without / \\ : * ? \" < > | (got {value!r})")
    return value


def write_archive(path: Path, folder: str, source_root: Path, sources: list[Path], out_dir: Path,
                  report_files: list[Path]) -> list[tuple[str, int]]:
    """Write the zip (atomically): ``folder/<source path>`` for each source, ``folder/<path under out_dir>``
    for each report file. Returns ``(archive name, size in bytes)`` per entry."""
    entries = [(f"{folder}/{relative.as_posix()}", source_root / relative) for relative in sources]
    entries += [(f"{folder}/{file.relative_to(out_dir).as_posix()}", file) for file in report_files]

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, file in entries:
                archive.write(file, name)

    atomic_write(path, write)
    return [(name, file.stat().st_size) for name, file in entries]


def make_readable(*paths: Path) -> None:
    """Atomic writes create owner-only files; a report and a hand-in are meant to be read by others."""
    for path in paths:
        path.chmod(0o644)


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"folder the scripts logged to (default {DEFAULT_RUNS}/)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"where report.md, report.html, figures/ and the zip go (default {DEFAULT_OUT}/)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME",
                        help="use run NAME (or SCRIPT/NAME) rather than the latest; repeatable")
    parser.add_argument("--zip", action="store_true", help="also write <Name>-<Firstname>-travail-TP1.zip")
    parser.add_argument("--name", default=None, help="family name, for the zip and the report's header")
    parser.add_argument("--first-name", default=None, help="first name, for the zip and the report's header")
    parser.add_argument("--title", default="Siamese and triplet networks — TP report", help="the report's title")
    parser.add_argument("--source-root", default=str(REPO_ROOT),
                        help="repository whose answers and sources are used (default: this repository)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.zip:
        name = check_person_name("--name", args.name)
        first_name = check_person_name("--first-name", args.first_name)
    source_root = Path(args.source_root)
    if not source_root.is_dir():
        raise SystemExit(f"error: --source-root {source_root}: no such folder")
    runs_root, out_dir = Path(args.runs), Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"error: --out {out_dir}: exists and is not a folder")
    started = time.perf_counter()

    notices = Notices()
    if (args.name or args.first_name) and not args.zip:
        notices.add("--name/--first-name without --zip: no archive written")
    index = RunIndex(runs_root, args.run, raw_folders=[GRID_FOLDER], notices=notices)
    figures_dir = out_dir / "figures"
    if figures_dir.is_dir():  # figures of an earlier build that this one may not draw again
        for stale in figures_dir.iterdir():
            if stale.is_file() and stale.suffix.lower() in FIGURE_SUFFIXES:
                stale.unlink()
    default_runs = runs_root.resolve() == (Path.cwd() / DEFAULT_RUNS).resolve()
    ctx = BuildContext(index=index, out_dir=out_dir, answers_dir=source_root / "report" / "answers",
                       runs_flag_value=None if default_runs else args.runs, notices=notices)
    author = " ".join(part for part in (args.first_name, args.name) if part) or None
    markdown_text = build_markdown(ctx, args.title, author)
    report_md = write_text_atomic(out_dir / "report.md", markdown_text)
    report_html = write_text_atomic(out_dir / "report.html", markdown_to_html(markdown_text, out_dir, args.title))
    make_readable(report_md, report_html)
    used = sum(len(runs) for runs in index.used.values())
    print(f"Report: {report_md} and {report_html} ({len(ctx.figures)} figure(s) in {figures_dir}, {used} run(s) "
          f"read, {len(notices.lines)} notice(s), {time.perf_counter() - started:.1f} s)")

    if args.zip:
        archive = out_dir / f"{name}-{first_name}-{ARCHIVE_SUFFIX}.zip"
        sources = source_files(source_root, excluded=[out_dir, runs_root])
        entries = write_archive(archive, archive.stem, source_root, sources, out_dir,
                                [report_md, report_html, *ctx.figures])
        make_readable(archive)
        print(f"Archive: {archive} ({human_size(archive.stat().st_size)}, {len(entries)} files)")
        for entry, size in entries:
            print(f"  {human_size(size):>10}  {entry}")
    return report_md


if __name__ == "__main__":
    main()
