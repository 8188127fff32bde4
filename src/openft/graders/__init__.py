"""OpenAI's graders (string_check, text_similarity, python, score_model, label_model,
multi): parsed and checked (`parse`), and run on samples (`grade`, `grade_batch`).

Pure of the web, the store and torch: the API validates and runs graders through it,
and the reinforcement trainer scores its completions with it. docs/graders.md."""

from openft.graders.model_graders import ModelCaller, ModelCallError
from openft.graders.python_sandbox import PythonLimits, Sandbox
from openft.graders.result import GradeResult, Sample
from openft.graders.run import grade, grade_batch
from openft.graders.spec import Grader, item_references, models_called, parse
from openft.graders.templates import UnknownVariable

__all__ = [
    "GradeResult",
    "Grader",
    "ModelCallError",
    "ModelCaller",
    "PythonLimits",
    "Sample",
    "Sandbox",
    "UnknownVariable",
    "grade",
    "grade_batch",
    "item_references",
    "models_called",
    "parse",
]
