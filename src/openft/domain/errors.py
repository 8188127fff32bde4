"""The one exception hierarchy of openft. The API renders each class to HTTP in one place.

OpenFTError
 ├── InvalidRequest          400  a request that is well-formed but cannot be honoured
 │    ├── InvalidCursor      400  `after` names no item of this list
 │    ├── InvalidFile        400  an uploaded file fails validation
 │    └── InvalidTransition  400  the job's status does not allow the operation
 ├── Unauthenticated         401  missing or wrong API key
 ├── PermissionDenied        403  a key whose scope does not allow the operation
 ├── NotFound                404  unknown (or other project's) job, file or model
 ├── LeaseLost               409  the worker no longer holds the job it reports into
 ├── JobChanged              409  the job changed while the request was handled: nothing was done
 ├── PayloadTooLarge         413  an upload over the configured size limit
 ├── StoreUnavailable        503  the database cannot be reached: retry later
 │    └── BlobUnavailable    503  the blob store cannot be reached or refuses access
 ├── ModelUnavailable        503  this server cannot load or run the model asked for
 ├── BlobMissing             500  a stored object that a record points at is not there
 └── SchemaMismatch          500  the database schema is not the one this code knows"""

from __future__ import annotations


class OpenFTError(Exception):
    """Base of every error openft raises on purpose."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code


class InvalidRequest(OpenFTError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidCursor(InvalidRequest):
    default_code = "invalid_cursor"


class InvalidFile(InvalidRequest):
    default_code = "invalid_file"


class InvalidTransition(InvalidRequest):
    default_code = "invalid_job_status"


class Unauthenticated(OpenFTError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(OpenFTError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "insufficient_permissions"


class NotFound(OpenFTError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class LeaseLost(OpenFTError):
    """The worker no longer holds this job: it must stop working on it."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "lease_lost"


class JobChanged(OpenFTError):
    """A request lost a race: the job changed between reading and writing, and the
    request changed nothing. 409, as a conflict with the job's current state."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "job_status_changed"


class PayloadTooLarge(OpenFTError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "file_too_large"


class StoreUnavailable(OpenFTError):
    """The database failed in a way the caller cannot fix: retry later."""

    status_code = 503
    error_type = "server_error"
    default_code = "store_unavailable"


class BlobUnavailable(StoreUnavailable):
    """The blob store (a local directory or a bucket) failed: nothing was changed, and
    the same request may succeed later."""

    default_code = "blob_store_unavailable"


class BlobMissing(OpenFTError):
    """An object a record points at is not in the blob store: lost storage or a store
    pointed at the wrong bucket, never a deletion (deleted records are gone first)."""

    default_code = "blob_missing"

    def __init__(self, key: str, store: str) -> None:
        super().__init__(f"The stored object {key!r} is missing from the blob store {store}.")
        self.key = key


class ModelUnavailable(OpenFTError):
    """The model exists but this server cannot run it (no engine, or loading failed)."""

    status_code = 503
    error_type = "server_error"
    default_code = "model_unavailable"


class SchemaMismatch(OpenFTError):
    """The database is at a schema revision this code does not run on."""
