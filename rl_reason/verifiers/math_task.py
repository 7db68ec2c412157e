"""The math scoring function that runs inside verifier workers (imports math-verify/sympy).

The trainer never imports this module: `MathVerifier` names it to the worker pool.
math-verify's own timeouts are turned off (`parsing_timeout=None`,
`timeout_seconds=None`): they use SIGALRM, which the worker already uses for its
soft limit, and they report an overrun as a silent "wrong" rather than a counted
timeout. The pool's kill is the hard limit.
"""

import functools
import logging

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rl_reason.verifiers.extract import extract_answer

# math-verify warns once per process that its timeout is off (intended here) and
# logs every unparsable answer, which is normal for model output.
logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)

# Boxed content first; a bare expression (e.g. from an "Answer: 1/2" line) second.
_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _parse(text: str) -> list:
    return parse(text, extraction_config=_EXTRACTION, parsing_timeout=None)


def _as_latex(answer: str) -> str:
    # math-verify finds answers inside LaTeX environments or boxes; a bare gold such as
    # "\frac{1}{2}" or "(0,1]" needs one around it. Golds that already carry a box or
    # math delimiters are passed as written.
    if "\\boxed" in answer or "$" in answer:
        return answer
    return "\\boxed{" + answer + "}"


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    # A batch holds each problem's gold once per sample (GRPO groups): parse it once.
    return tuple(_parse(_as_latex(gold)))


def score(response: str, gold: str) -> tuple[str, str | None, str | None]:
    """(status, extracted answer, detail) for one response; status is not "timeout"."""
    extracted = extract_answer(response)
    if extracted is None:
        return "no_answer", None, None
    gold_parsed = list(_parse_gold(gold))
    if not gold_parsed:
        return "error", extracted, f"gold answer {gold!r} could not be parsed by math-verify"
    predicted = _parse(_as_latex(extracted))
    if not predicted:
        return "wrong", extracted, None
    correct = verify(gold_parsed, predicted, timeout_seconds=None)
    return ("correct" if correct else "wrong"), extracted, None


# The first parse pays sympy's lazy imports and cache set-up (about half a second);
# paying it here, before the worker reports ready, keeps it off the first item's clock.
score("\\boxed{\\frac{1}{2}}", "0.5")
