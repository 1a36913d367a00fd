"""A griffe extension for the API reference: funcnet's docstring conventions, rendered well.

* The layer docstrings describe the parameter pytree under ``Params:``, which the Google
  docstring parser would read as the arguments section: it is retitled ``Params structure:``
  (rendered as a titled block, like ``Shapes:``).
* Sphinx roles (``:func:`fit```) become plain inline code.

Both rewrites happen before the docstrings are parsed; the source is untouched.
"""

import re

import griffe

_PARAMS = re.compile(r"^(\s*)Params:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|data|meth|attr|exc|obj|const):`~?([^`]+)`")


class FuncnetSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            value = _PARAMS.sub(r"\1Params structure:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", value)
