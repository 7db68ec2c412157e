"""Final-answer extraction from model text: the last \\boxed{...}, else an "Answer:" line.

Every step here is linear in the length of the text (no backtracking regex, no
rescans of the same characters), so a 1 MB response or a million nested braces
costs a fraction of a second. It still runs inside the verifier workers for the
math stage, so even a bug here could not hang the trainer.

Rules:
- `\\boxed{...}` and `\\fbox{...}` count, with balanced braces; escaped braces
  (`\\{`, `\\}`) are content, not nesting, so `\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`.
- The last box that closes wins. A box that never closes (a response truncated
  mid-answer) or is empty (`put it in \\boxed{}`) is skipped in favour of an
  earlier one.
- `\\boxed 5` (LaTeX's brace-less form, common in model output) gives the next
  token up to whitespace, `$` or a brace, minus trailing sentence punctuation.
- Without a box, the last line of the form `Answer: ...` (also `Final Answer:`,
  markdown bold or heading around it) gives the rest of that line, with a wrapping
  `$...$` and a trailing period removed.
- Nothing found, or only empty answers: None.

`cut_after_first_box` ends a response at its first box by the same rules: a
multi-attempt episode's attempt is the text up to its first complete answer.
"""

import re

# `(?![A-Za-z])` keeps `\boxedx` (some other macro) from matching.
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A backslash pair is consumed whole so `\{` / `\}` / `\\` never count as braces.
_BRACE_OR_ESCAPE = re.compile(r"\\[\s\S]|[{}]")
_NOT_SPACE = re.compile(r"\S")
_TOKEN_END = re.compile(r"[\s${}]")
_ANSWER_PREFIXES = ("final answer", "answer")


def _box_span(text: str, start: int, bound: int) -> tuple[str, int] | None:
    """(content, end) of the box whose macro starts at `start`, if it closes before
    `bound`; `end` is just past its closing brace (or its brace-less token)."""
    macro_end = _BOX_START.match(text, start).end()
    first = _NOT_SPACE.search(text, macro_end, bound)
    if first is None:
        return None
    open_at = first.start()
    if text[open_at] != "{":
        if open_at == macro_end:  # `\boxed5` is not the brace-less form.
            return None
        token_end = _TOKEN_END.search(text, open_at, bound)
        end = token_end.start() if token_end else bound
        return text[open_at:end].rstrip(".,;:"), end
    depth = 0
    for match in _BRACE_OR_ESCAPE.finditer(text, open_at, bound):
        char = match.group()
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : match.start()], match.end()
    return None


def _answer_boxes(text: str, *, last: bool):
    """(content, end) of each box an answer can come from, last box first if `last`.

    A box that does not close before the next box's start cannot close after it
    either (its braces would have to close the later box first), so each scan stops
    at the following start and the scans cover disjoint spans: linear time. The same
    bound makes `\\boxed{\\boxed{5}}` give the inner box's 5. Empty boxes are skipped.
    """
    starts = [match.start() for match in _BOX_START.finditer(text)]
    bounds = starts[1:] + [len(text)]
    pairs = zip(reversed(starts), reversed(bounds)) if last else zip(starts, bounds)
    for start, bound in pairs:
        span = _box_span(text, start, bound)
        if span is not None and span[0].strip():
            yield span[0].strip(), span[1]


def _last_box(text: str) -> str | None:
    return next((content for content, _ in _answer_boxes(text, last=True)), None)


def cut_after_first_box(text: str) -> str:
    """`text` up to the end of its first complete box with an answer (its closing
    brace, or the token of a brace-less `\\boxed 5`); all of `text` when none closes.

    Boxes are read as `extract_answer` reads them (nested and escaped braces, empty
    boxes skipped), so the extracted answer of the cut text is its first answer.
    """
    if not isinstance(text, str):
        raise TypeError(f"cut_after_first_box expects a str, got {type(text).__name__}")
    first = next(_answer_boxes(text, last=False), None)
    return text if first is None else text[:first[1]]


def _answer_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if "answer" not in line.lower():
            continue
        stripped = line.strip().lstrip("*#>- \t").rstrip()
        lowered = stripped.lower()
        for prefix in _ANSWER_PREFIXES:
            if not lowered.startswith(prefix):
                continue
            rest = stripped[len(prefix) :].lstrip("* \t")
            if not rest.startswith(":"):
                continue
            answer = rest[1:].strip().strip("*").strip().removesuffix(".").rstrip()
            if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
                answer = answer.strip("$").strip()
            if answer:
                return answer
    return None


def extract_answer(text: str) -> str | None:
    """The final answer in `text`: last closed \\boxed{}/\\fbox{}, else an "Answer:" line."""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}")
    boxed = _last_box(text)
    if boxed is not None:
        return boxed
    return _answer_line(text)
