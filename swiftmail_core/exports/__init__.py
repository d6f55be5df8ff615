"""Exports: contacts, suppressions and the campaign ledger as streamed CSV.

Each export is a job that runs ``COPY (SELECT ...) TO STDOUT`` inside the
tenant's transaction and streams the CSV into storage; cells that a
spreadsheet would run as a formula are escaped in the query itself.
"""
