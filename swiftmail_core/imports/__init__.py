"""Imports: contacts and suppressions from CSV (or gzip), streamed, as jobs.

Entry points: ``service.create_import`` (API: store the upload, queue a
job), ``service.import_file`` (CLI: run a local file now), and the job
runner's handler ``service.run_import``. See ``contacts`` for the merge
rules and ``limits`` for the caps.
"""
