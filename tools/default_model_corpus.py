"""The default model's training text: Python's documentation, stdlib docstrings, and chat pairs.

All of it is on a Debian machine offline: the stdlib source (docstrings) and the HTML manual of
`python3-doc` (`apt-get install python3-doc`, under /usr/share/doc/python3.X/html). Every piece
is a document; documents are split into training and held-out sets by a hash of where they came
from (a module path, a manual page), so held-out text is from modules and pages the model never
saw. Chat pairs put a question and a docstring-style answer in GLM-4's chat layout
(`<|user|>\\n...<|assistant|>\\n...`, the layout `serve` renders without a chat template), so the
chat endpoint answers in kind.
"""

from __future__ import annotations

import ast
import html.parser
import random
import re
import subprocess
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
HELDOUT_EVERY = 20  # sources with crc32(name) % 20 == 0 are held out
# Manual sections of prose about the language and library (not indexes, changelogs or C API).
DOC_SECTIONS = ("tutorial", "library", "howto", "faq", "reference", "glossary.html", "using")
USER, ASSISTANT = "<|user|>", "<|assistant|>"
# Typography of the manual mapped to ASCII, so the byte-level tokenizer spends no merges on it.
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ",
                        "\u2013": "-", "\u2026": "...", "\u00a0": " ", "\u2192": "->"})


def held_out(name: str) -> bool:
    return zlib.crc32(name.encode()) % HELDOUT_EVERY == 0


@dataclass
class Corpus:
    train: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    chat_train: list[str] = field(default_factory=list)
    chat_heldout: list[str] = field(default_factory=list)
    sources: dict = field(default_factory=dict)

    def add(self, name: str, docs: list[str], chat: bool = False, hold: bool = False) -> None:
        h = hold or held_out(name)
        if chat:
            (self.chat_heldout if h else self.chat_train).extend(docs)
        else:
            (self.heldout if h else self.train).extend(docs)


# -- stdlib docstrings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Docstring:
    qualname: str  # module.Class.method
    kind: str  # module, class, function
    signature: str  # "(a, b=1)" for functions, "" otherwise
    text: str


def _signature(node: ast.AST) -> str:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = ast.unparse(node.args)
        return f"({args})"
    return ""


def module_docstrings(path: Path, module: str) -> list[Docstring]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out: list[Docstring] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc and len(doc) >= 20 and doc.isascii():
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    out.append(Docstring(name, kind, _signature(child), doc.strip()))
                visit(child, name)

    doc = ast.get_docstring(tree, clean=True)
    if doc and len(doc) >= 20 and doc.isascii():
        out.append(Docstring(module, "module", "", doc.strip()))
    visit(tree, module)
    return out


def stdlib_docstrings(root: Path) -> list[tuple[str, list[Docstring]]]:
    """(relative path, docstrings) for every parseable stdlib module, sorted by path."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        docs = module_docstrings(path, ".".join(parts))
        if docs:
            out.append((rel.as_posix(), docs))
    return out


def _first_paragraph(text: str, limit: int = 600) -> str:
    para = text.split("\n\n", 1)[0].strip()
    return para if len(para) <= limit else para[:limit].rsplit(" ", 1)[0] + "..."


def chat_pairs(docs: list[Docstring], rng: random.Random) -> list[str]:
    """Questions about stdlib names answered by their docstrings, in GLM-4's chat layout."""
    out = []
    for d in docs:
        short = d.qualname.rsplit(".", 1)[-1]
        if d.kind == "module":
            q = rng.choice([f"What is the {d.qualname} module for?", f"What does the {d.qualname} module do?",
                            f"Tell me about {d.qualname}."])
            a = _first_paragraph(d.text)
        elif d.kind == "class":
            q = rng.choice([f"What is {d.qualname}?", f"What does the {short} class do?",
                            f"Explain {d.qualname}."])
            a = _first_paragraph(d.text)
        else:
            q = rng.choice([f"What does {d.qualname} do?", f"What does {short}() return?",
                            f"How do I use {d.qualname}?", f"Write a function like {short}."])
            if q.startswith("Write"):
                a = f"def {short}{d.signature}:\n    \"\"\"{_first_paragraph(d.text)}\"\"\""
            else:
                a = _first_paragraph(d.text)
        out.append(f"{USER}\n{q}{ASSISTANT}\n{a}")
    return out


# -- the HTML manual --------------------------------------------------------------------------


class _ManualText(html.parser.HTMLParser):
    """Paragraph text of a Sphinx page's main body (headings, prose, list items, code blocks)."""

    BLOCKS = {"p", "pre", "dt", "li", "h1", "h2", "h3", "h4", "div", "section", "table", "tr", "blockquote", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # div nesting inside the main body; 0 = outside
        self.skip = 0  # inside a headerlink or similar
        self.pre = 0
        self.paras: list[str] = []
        self.cur: list[str] = []

    def _flush(self) -> None:
        text = "".join(self.cur)
        text = text if self.pre else re.sub(r"\s+", " ", text)
        text = text.strip("\n ") if self.pre else text.strip()
        if text:
            self.paras.append(text)
        self.cur = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth == 0:
            if tag == "div" and a.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag == "a" and "headerlink" in (a.get("class") or ""):
            self.skip += 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag == "a" and self.skip:
            self.skip -= 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self.pre -= 1
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.cur.append(data)


def manual_root() -> Path | None:
    found = sorted(Path("/usr/share/doc").glob("python3*/html/library/index.html"))
    return found[-1].parent.parent.resolve() if found else None


def manual_version(root: Path) -> str:
    """The Debian packages of the manual and their versions (training.json records them), or ""
    without dpkg."""
    minor = root.resolve().parent.name  # python3.11
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "python3-doc", f"{minor}-doc"],
                             capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return ", ".join(out.stdout.split("\n")).strip(", ")


def manual_pages(root: Path) -> list[tuple[str, str]]:
    """(page path, plain text) of the manual's prose pages, sorted by path."""
    out = []
    for section in DOC_SECTIONS:
        base = root / section
        pages = [base] if base.is_file() else sorted(base.rglob("*.html"))
        for page in pages:
            parser = _ManualText()
            parser.feed(page.read_text(encoding="utf-8", errors="replace"))
            parser._flush()
            text = "\n\n".join(parser.paras)
            text = unicodedata.normalize("NFKC", text.translate(_ASCII))
            if len(text) >= 200:
                out.append((page.relative_to(root).as_posix(), text))
    return out


def build(stdlib_root: Path, doc_root: Path | None, seed: int) -> Corpus:
    corpus = Corpus()
    rng = random.Random(seed)
    modules = stdlib_docstrings(stdlib_root)
    # A held-out module's manual page is held out too: it says much of what its docstrings say.
    heldout_modules = {docs[0].qualname.split(".")[0] for rel, docs in modules if held_out(rel)}
    for rel, docs in modules:
        corpus.add(rel, [d.text for d in docs])
        corpus.add(rel, chat_pairs([d for d in docs if not d.qualname.rsplit(".", 1)[-1].startswith("_")], rng),
                   chat=True)
    corpus.sources["stdlib_modules"] = len(modules)
    if doc_root is not None:
        pages = manual_pages(doc_root)
        for rel, text in pages:
            page = Path(rel)
            hold = page.parent.name == "library" and page.stem.split(".")[0] in heldout_modules
            corpus.add(rel, [text], hold=hold)
        corpus.sources["manual_pages"] = len(pages)
    return corpus
