"""The societies' real files: CISAC CWR 2.1/2.2 (works registrations in, acknowledgements and
registrations out) and DDEX DSR flat files (usage in), read and written without I/O.

Rules kept here: every reader is total over arbitrary bytes: a malformed line, record or field
is a `Refusal` naming the line, the record and the field (and, for CWR, the error level of the
specification: E file, G group, T transaction, R record, F field), never an exception; readers
take lines and yield values as they go, so a file of any size is read in bounded memory; the
writers produce files the readers accept. Opening files, signing and sending is the client's job
(`kledger import`, cluster/client/import_cli.py).

    problems.py     Refusal, the one shape of every complaint
    territories.py  CISAC TIS codes (2136 World, 0410 Korea, groups) -> ISO 3166-1 territories
    societies.py    CISAC society codes the ledger names (118 KOMCA, ...)
    cwr_layout.py   the fixed-width record layouts of CWR 2.1 and 2.2
    cwr.py          reading a CWR file: structure, counts, fields, transactions, share rules
    cwr_ledger.py   a CWR transaction -> the ledger's transactions (parties, work, shares, links)
    cwr_write.py    writing CWR 2.2: registrations (export) and acknowledgements (ACK)
    dsr.py          reading a DDEX DSR flat file -> ReportUsage transactions
"""
