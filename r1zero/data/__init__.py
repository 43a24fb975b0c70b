"""Tasks and data: example generators, prompt templates and the prompt iterator.

Examples are dicts with at least `id`, `question` and `answer`; `prompt` is the templated text the
model sees. tensorflow-datasets and grain are imported only inside this package, lazily.
"""

from r1zero.data.tasks import PromptIterator, load_task, render

__all__ = ["PromptIterator", "load_task", "render"]
