"""Reports: a record, read once into a document, written in any format.

    record (RunResult, Comparison, BisectResult)
      → a Document, built once:   run (with builds, findings, calibration, setup),
                                  comparison, bisection; the words of a cell: cells
      → a format, syntax only:    formats/ terminal, text, markdown, html (interface.Format)

``document`` holds the block types, ``load`` reads a saved record back (and ``normalize``
gives a live record the same form), ``json_format`` writes a record as JSON, ``charts``
draws a document's charts, ``repro`` the reproductions (the harness and what to run it
on), ``job_summary`` appends the Markdown report to GitHub's job summary.
"""
