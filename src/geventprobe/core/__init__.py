"""The probe core, in the parent: plan a run, run it, judge it, build the one record.

``runner`` is the one way through a run; ``builds`` the driver setups; ``metrics`` turns
the workers' records and the parent's samples into figures; ``rules`` judges them;
``causes`` explains a verdict and names the fix; ``calibrate`` the known controls;
``blocked`` who blocked. Nothing here prints.
"""
