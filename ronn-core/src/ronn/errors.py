"""One typed error hierarchy for everything ronn raises.

Every error derives from :class:`RonnError` and, where it fits, from the builtin a Python
user would catch (``ValueError``, ``TypeError``, ``FileNotFoundError`` ...), so code written
against onnxruntime's broad ``except Exception`` and code that wants precision both work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class RonnError(Exception):
    """Base class of every error ronn raises."""


class RonnWarning(UserWarning):
    """Base class of every warning ronn emits."""


# --- models -------------------------------------------------------------------------------


class ModelError(RonnError, ValueError):
    """The model could not be loaded or is not a valid model."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model file does not exist."""


class ModelFormatError(ModelError):
    """The bytes are not a (complete) model of a known format."""


class UnsupportedModelVersionError(ModelError):
    """The model's IR version or an opset version is outside what ronn supports."""


class InvalidGraphError(ModelError):
    """The graph is malformed: a dangling input, a cycle, a duplicate output name ..."""


class NoLoaderError(ModelError):
    """No registered model loader accepts the given source."""


class HubError(ModelError):
    """A model could not be fetched from the Hugging Face Hub."""


class HubNotFoundError(HubError, ModelNotFoundError):
    """The repository, revision or file does not exist on the Hub (or is not cached offline)."""


class UnsupportedOperatorError(RonnError, NotImplementedError):
    """Operators of the model that no available provider implements.

    ``operators`` lists every missing ``(domain, op_type, version)`` at once.
    """

    def __init__(self, operators: Iterable[tuple[str, str, int]], providers: Sequence[str]):
        self.operators = sorted(set(operators))
        self.providers = list(providers)
        listed = ", ".join(f"{d or 'ai.onnx'}::{op} (opset {v})" for d, op, v in self.operators)
        super().__init__(
            f"{len(self.operators)} operator(s) not implemented by any of the providers "
            f"{self.providers}: {listed}"
        )


# --- inputs and running -------------------------------------------------------------------


class InputError(RonnError, ValueError):
    """The inputs given to ``run`` do not match the model."""


class InvalidInputNameError(InputError, KeyError):
    """A feed or fetch name that the model does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingInputError(InputError):
    """A required model input was not fed."""


class InputTypeError(InputError, TypeError):
    """A fed value has the wrong element type."""


class InputShapeError(InputError):
    """A fed value has the wrong rank or a wrong static dimension."""


class KernelError(RonnError, RuntimeError):
    """A kernel failed while running a node; the message names the node."""


class RunCancelledError(RonnError):
    """The run was terminated through ``RunOptions.terminate``."""


# --- providers and plugins ----------------------------------------------------------------


class ProviderError(RonnError, ValueError):
    """An execution provider was asked for that does not exist or cannot run here."""


class ProviderFallbackError(ProviderError):
    """Nodes would fall back to another provider while fallback is disabled."""


class PluginError(RonnError):
    """A plugin could not be loaded, or two plugins conflict."""


class PluginLoadError(PluginError, ImportError):
    """A plugin's entry point failed to import; the message names its distribution."""


class RegistrationConflictError(PluginError):
    """Two plugins registered the same kernel, provider, loader, optimizer or allocator."""


class OptionError(RonnError, ValueError):
    """A session, run or provider option has an invalid value."""
