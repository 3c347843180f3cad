"""The broker's reference client: exactly the calls the mobile app makes, in the order it makes them.

- `api`: the broker's HTTP API, one method per endpoint, typed answers (the wire schemas), errors as
  `ApiRefused(code, message)`. Thin: it decides nothing.
- `parts`: which parts to send, in which windows, and whether a resumed file still fits the upload's parts.
  No I/O, so the resume rules are tested without a network.
- `bodies`: request bodies that stream a file (a byte range of it, or a multipart/form-data form) and report
  every block read, so nothing is held whole in memory and the progress bar follows the bytes on the wire.
- `transfer`: bytes to the store: one presigned POST, or presigned part PUTs on a few threads, each retried
  with backoff, URLs asked for in windows and renewed when they expire.
- `flow`: ticket → transfer → complete → wait for the result; or, resuming, status → stored parts → the
  missing parts → complete → wait.
"""
