"""The one error hierarchy of fence: every failure a user or admin can see is one of these.

Each class carries a message template (filled from keyword fields), an exit code, and whether it
is the user's fault (shown as one line, no traceback) or an internal fault (a bug or an
environment problem: still one line, but the CLIs hint at ``--debug``). Errors cross the daemon's
HTTP boundary by class name and fields, and the client raises the same class again.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Exit codes, grouped so a script can tell kinds of failure apart.
EXIT_USAGE = 2          # bad input: a value, a name, a key path
EXIT_NOT_FOUND = 3      # something named does not exist
EXIT_CONFLICT = 4       # the request clashes with current state
EXIT_UNAVAILABLE = 5    # the daemon or the engine cannot be reached
EXIT_SECURITY = 6       # refused because a protection is missing
EXIT_TIMEOUT = 7        # work did not finish in time
EXIT_INTERNAL = 70      # a bug or an unexpected engine answer (EX_SOFTWARE)


class FenceError(Exception):
    """Base of every fence error.

    Subclasses set ``template`` (``str.format`` fields), ``exit_code`` and ``user_error``.
    """

    template: ClassVar[str] = "{detail}"
    exit_code: ClassVar[int] = 1
    user_error: ClassVar[bool] = True
    _wire_message: str | None = None

    def __init__(self, **fields: Any) -> None:
        self.fields: dict[str, Any] = fields
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-line message shown to the user (newlines folded)."""
        if self._wire_message is not None:
            return self._wire_message
        try:
            text = self.template.format(**self.fields)
        except (KeyError, IndexError):
            text = f"{self.template} {self.fields!r}"
        return " ".join(text.split("\n")).strip()

    def to_wire(self) -> dict[str, Any]:
        """Serialise for the daemon API (class name, message, fields as strings)."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "fields": {k: _wire_value(v) for k, v in self.fields.items()},
        }


def _wire_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_wire_value(v) for v in value]
    return str(value)


# --- input and config --------------------------------------------------------------------------

class UsageError(FenceError):
    """A bad argument on the command line or in an API request."""

    template = "{detail}"
    exit_code = EXIT_USAGE


class InvalidConfigValue(FenceError):
    """A config value that does not fit the key's type."""

    template = "{component} {key}: {value!r} is not allowed ({allowed})"
    exit_code = EXIT_USAGE


class InvalidKeyPath(FenceError):
    """A config key path or component name that is malformed."""

    template = "{what} {path!r} is malformed: {why}"
    exit_code = EXIT_USAGE


class ConfigKeyNotFound(FenceError):
    """A config key that is not set and has no default."""

    template = "{component} {key}: no such key"
    exit_code = EXIT_NOT_FOUND


class UnknownComponent(FenceError):
    """A config component that has no schema and no stored keys."""

    template = "no config component {component!r} (known: {known})"
    exit_code = EXIT_NOT_FOUND


class ConfigTypeChange(FenceError):
    """Setting a value whose type differs from what the key holds, without --force."""

    template = ("{component} {key} holds a {old_type}, not a {new_type}; "
                "use --force to change its type")
    exit_code = EXIT_CONFLICT


class ConfigFileCorrupt(FenceError):
    """The config file on disk cannot be read."""

    template = "config file {path} cannot be read: {why}"
    exit_code = EXIT_INTERNAL
    user_error = False


class HomeFileInvalid(FenceError):
    """A file fence keeps under FENCE_HOME holds something it did not write."""

    template = "{path} cannot be used: {why}"
    exit_code = EXIT_INTERNAL
    user_error = False


class RequestInvalid(FenceError):
    """An API request whose parameters or JSON body do not fit the endpoint (sent as HTTP 422)."""

    template = "bad request: {where}: {why}"
    exit_code = EXIT_USAGE


class RequestTooLarge(FenceError):
    """An API request body over the endpoint's size cap (sent as HTTP 413)."""

    template = "bad request: {where}: the body is larger than {limit} bytes"
    exit_code = EXIT_USAGE


# --- engine and containers ---------------------------------------------------------------------

class EngineUnavailable(FenceError):
    """The Docker Engine does not answer."""

    template = "the Docker Engine is not reachable ({detail}); start dockerd (make test does)"
    exit_code = EXIT_UNAVAILABLE


class ImageNotFound(FenceError):
    """An image fence was asked to use is not on this node's engine."""

    template = ("stack image {image!r} is not on this node's Docker Engine; build it with "
                "`kato image build --tag {image}` or set another with "
                "`kato config set fence docker/image NAME`")
    exit_code = EXIT_NOT_FOUND


class ContainerNotFound(FenceError):
    """A container id that the engine does not know (or that fence does not own)."""

    template = "container {container} not found"
    exit_code = EXIT_NOT_FOUND


class ContainerGone(FenceError):
    """A container that stopped or vanished while fence was using it."""

    template = "container {container} is no longer running ({detail})"
    exit_code = EXIT_CONFLICT


class ProcessTimeout(FenceError):
    """A process in a container ran past its timeout and was killed."""

    template = "{what} did not finish within {seconds} s and was killed"
    exit_code = EXIT_TIMEOUT


class UsernsRequired(FenceError):
    """security/require_userns is true but the engine does not remap user namespaces."""

    template = ("refusing to create a container: security/require_userns is true but the Docker "
                "Engine runs without user-namespace remapping (start dockerd with "
                "--userns-remap=default, or `kato config set fence security/require_userns false`)")
    exit_code = EXIT_SECURITY


class EngineError(FenceError):
    """An unexpected answer from the engine."""

    template = "the Docker Engine refused {action}: {detail}"
    exit_code = EXIT_INTERNAL
    user_error = False


# --- stack image -------------------------------------------------------------------------------

class StackBuildFailed(FenceError):
    """Building the stack image failed."""

    template = "stack image build failed in {step}: {detail}"
    exit_code = EXIT_INTERNAL
    user_error = False


class ToolMissing(FenceError):
    """A host program fence needs is not installed."""

    template = "{tool} is not installed on this node ({hint})"
    exit_code = EXIT_UNAVAILABLE


# --- staging -----------------------------------------------------------------------------------

class InvalidName(FenceError):
    """An app name, env variable name or other identifier that breaks its pattern."""

    template = "{what} {value!r} is not allowed: {why}"
    exit_code = EXIT_USAGE


class SourceRefused(FenceError):
    """App source (a folder, archive or repository) that fence will not stage."""

    template = "source refused: {entry}: {why}"
    exit_code = EXIT_USAGE


class ManifestInvalid(FenceError):
    """A stackato.yml / manifest.yml that cannot be used."""

    template = "{source}{where}: {why}"
    exit_code = EXIT_USAGE


class ProcfileInvalid(FenceError):
    """A Procfile line that is not ``type: command``."""

    template = "Procfile line {line}: {why}"
    exit_code = EXIT_USAGE


class BuildpackInvalid(FenceError):
    """A buildpack that cannot be found or used."""

    template = "buildpack {spec!r}: {why}"
    exit_code = EXIT_USAGE


class NoBuildpackDetected(FenceError):
    """No buildpack's bin/detect accepted the app."""

    template = "no buildpack detected this app (tried: {tried}); name one with --buildpack"
    exit_code = EXIT_USAGE


class StagingFailed(FenceError):
    """A staging phase failed; the tail of its output says why."""

    template = "staging failed in {phase}{buildpack}: {detail}"
    exit_code = EXIT_CONFLICT


class StagingTimeout(FenceError):
    """Staging ran past staging/timeout and was killed."""

    template = "staging timed out after {seconds} s in {phase} (staging/timeout) and was killed"
    exit_code = EXIT_TIMEOUT


class DropletNotFound(FenceError):
    """A droplet id that the store does not hold."""

    template = "droplet {droplet} not found"
    exit_code = EXIT_NOT_FOUND


class DropletImageFailed(FenceError):
    """A droplet could not be unpacked onto the stack as the image its instances start from."""

    template = "could not prepare droplet {droplet} on stack {stack} for running: {detail}"
    exit_code = EXIT_CONFLICT


class DropletCorrupt(FenceError):
    """A droplet whose content no longer matches its digest."""

    template = "droplet {droplet} is corrupt: {why}"
    exit_code = EXIT_INTERNAL
    user_error = False


# --- apps --------------------------------------------------------------------------------------

class AppNotFound(FenceError):
    """An app name the node does not know."""

    template = "no app named {app!r} on this node (see `fence apps`)"
    exit_code = EXIT_NOT_FOUND


class NoRelease(FenceError):
    """An app that was never staged successfully."""

    template = "app {app!r} has no release yet: push it first"
    exit_code = EXIT_CONFLICT


class ReleaseNotFound(FenceError):
    """A release that is not among the app's kept releases."""

    template = "app {app!r} has no release {release} (see `fence releases {app}`)"
    exit_code = EXIT_NOT_FOUND


class DeployFailed(FenceError):
    """New instances did not become healthy; the previous ones keep serving."""

    template = "release {release} of {app} did not start: {why}; the previous release keeps serving"
    exit_code = EXIT_CONFLICT


class ReleaseFailed(FenceError):
    """An app's release command (the ``release:`` process type) failed: the deploy is aborted
    before any instance of the new release starts."""

    template = "release command `{command}` of {app} {outcome}: release {release} was not deployed{kept}"
    exit_code = EXIT_CONFLICT


# --- daemon ------------------------------------------------------------------------------------

class DaemonNotRunning(FenceError):
    """The fence daemon does not answer on its socket."""

    template = "the fence daemon is not running (no answer on {socket}); start it with `fence serve`"
    exit_code = EXIT_UNAVAILABLE


class DaemonPermissionDenied(FenceError):
    """The daemon's socket exists but this user may not use it."""

    template = ("permission denied on {socket}: the fence daemon accepts root and members of the "
                "`fence` group only")
    exit_code = EXIT_SECURITY


class DaemonAlreadyRunning(FenceError):
    """Another fence daemon already answers on the socket."""

    template = "another fence daemon already answers on {socket}"
    exit_code = EXIT_CONFLICT


class StoreError(FenceError):
    """The SQLite state store cannot be opened or is from a newer fence."""

    template = "state store {path}: {detail}"
    exit_code = EXIT_INTERNAL
    user_error = False


class InternalError(FenceError):
    """A bug: something fence did not expect."""

    template = "internal error: {detail}"
    exit_code = EXIT_INTERNAL
    user_error = False


# --- router ------------------------------------------------------------------------------------

class RouteInvalid(FenceError):
    """A route the router cannot serve: a bad upstream, or a host or app claimed twice."""

    template = "route for app {app!r}: {why}"
    exit_code = EXIT_USAGE


class HostTaken(FenceError):
    """A host name (an app's default ``APP.<router/domain>`` or one of its URLs) that another app holds."""

    template = "host name {host} already routes to app {holder}"
    exit_code = EXIT_USAGE


class RouterConfigRefused(FenceError):
    """nginx refused a router config (``nginx -t`` or the reload); the old config keeps serving."""

    template = "router config refused, the previous one keeps serving: {detail}"
    exit_code = EXIT_CONFLICT
    user_error = False


class RouterUnavailable(FenceError):
    """The router's nginx could not be started or stopped."""

    template = "the router (nginx) {action} failed: {detail}"
    exit_code = EXIT_UNAVAILABLE
    user_error = False


# --- node operations ---------------------------------------------------------------------------

class AdmissionRefused(FenceError):
    """An instance start that would promise instances more memory than the node may give."""

    template = ("not enough memory on this node for instance {index} of {app} ({need} MiB): "
                "{promised} MiB of {limit} MiB are already promised to instances "
                "(node/memory_overcommit {factor} x {total} MiB RAM)")
    exit_code = EXIT_CONFLICT


class RolloutFailed(FenceError):
    """A stack rollout stopped for some apps; their old instances keep serving."""

    template = "rollout onto {image} failed for {failed} of {total} apps: {detail}"
    exit_code = EXIT_CONFLICT


class RolloutBusy(FenceError):
    """A stack rollout asked for while another one runs on the node."""

    template = "another stack rollout is running on this node; wait for it to finish, then run it again"
    exit_code = EXIT_CONFLICT


class SourceNotKept(FenceError):
    """A restage of an app whose current droplet's source fence did not keep."""

    template = ("cannot restage {app}: fence keeps the source of droplets staged from now on, and "
                "its current droplet {droplet} was staged without a kept source; push the app "
                "again (`fence push`), after that `fence restage {app}` works")
    exit_code = EXIT_CONFLICT


class DockerfileRefused(FenceError):
    """A Dockerfile construct fence does not build (checked before any build starts)."""

    template = "{path}:{line}: {instruction}: {why}"
    exit_code = EXIT_SECURITY


class BuildFailed(FenceError):
    """A Dockerfile build step failed (its output is in the staging log)."""

    template = "the Dockerfile build failed at {step}: {detail}"
    exit_code = EXIT_CONFLICT


class BuildRefused(FenceError):
    """A Dockerfile build the node's settings do not allow at all (e.g. no userns-remap)."""

    template = "refusing to build {app} from a Dockerfile: {why}"
    exit_code = EXIT_SECURITY


# --- the cluster (Swarm) -----------------------------------------------------------------------

class ClusterError(FenceError):
    """A cluster operation that clashes with the engine's Swarm state."""

    template = "{detail}"
    exit_code = EXIT_CONFLICT


class JoinRefused(FenceError):
    """A node that lacks a protection every cluster node needs, refused before it joins."""

    template = "refusing to join the cluster: {detail}"
    exit_code = EXIT_SECURITY


class NodeNotFound(FenceError):
    """A cluster node name or id that the swarm does not know."""

    template = "no cluster node {node!r} (see `kato node list`)"
    exit_code = EXIT_NOT_FOUND


class RegistryUnavailable(FenceError):
    """The cluster's image registry does not answer, or refused a push or pull."""

    template = "the cluster registry at {address} {detail}"
    exit_code = EXIT_UNAVAILABLE
# --- backing services (issue 16) -----------------------------------------------------------------

class ServiceNotFound(FenceError):
    """A service name the node does not know."""

    template = "no service named {service!r} on this node (see `fence services`)"
    exit_code = EXIT_NOT_FOUND


class ServiceConflict(FenceError):
    """A service request that clashes with what the service is (bound, exists, another type)."""

    template = "service {service}: {detail}"
    exit_code = EXIT_CONFLICT


class ServiceFailed(FenceError):
    """A service's server did not come up, or a backup or restore failed in it."""

    template = "service {service}: {detail}"
    exit_code = EXIT_INTERNAL
    user_error = False


class BackupRefused(FenceError):
    """A backup that cannot be restored (another type, corrupt, truncated, missing)."""

    template = "backup {backup} of {service} refused: {detail}"
    exit_code = EXIT_CONFLICT


def error_classes() -> dict[str, type[FenceError]]:
    """Every FenceError subclass by name, for re-raising errors that crossed the API."""
    found: dict[str, type[FenceError]] = {}
    pending: list[type[FenceError]] = [FenceError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def from_wire(payload: dict[str, Any]) -> FenceError:
    """Rebuild the error a daemon reported, as the same class where fence knows it.

    Args:
        payload: the ``error`` object of an API response (``type``, ``message``, ``fields``).

    Returns:
        The error, ready to raise; an ``InternalError`` carrying the message if the type is unknown.
    """
    cls = error_classes().get(str(payload.get("type")))
    fields = payload.get("fields") or {}
    message = str(payload.get("message", "unknown daemon error"))
    if cls is None:
        return InternalError(detail=message)
    err = cls.__new__(cls)
    err.fields = dict(fields)
    err._wire_message = message
    Exception.__init__(err, message)
    return err
