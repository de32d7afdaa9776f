"""The report's renderers: each walks the one ordered list of sections (``report.sections``).

``html`` writes one self-contained page, ``markdown`` a pull-request comment, ``csv`` one file per
table of raw numbers. None builds a row of its own; a new section needs no change here.
"""
