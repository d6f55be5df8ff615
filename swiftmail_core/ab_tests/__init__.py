"""A/B tests: campaign variants, the random split, the winner and the stats.

``variants`` edits a campaign's test (2 to 5 variants, the test share, how
and when the winner is chosen) while the campaign is a draft or scheduled;
``sending.audience`` splits the test share among the variants when the
audience is resolved; ``decision`` picks the winner (the scheduler tick, or a
person) with one conditional UPDATE and queues the rest of the audience with
it; ``stats`` shows each variant with Wilson confidence intervals.
"""
