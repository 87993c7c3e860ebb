"""`factory testset`: a DynaBench-style test set from a grid of failure modes x business impacts.

`grid` loads and checks the grid file (testsets/*.yaml); `run` builds one policy per grid case from
the test pool of the rule-disjoint split and a violating and a complying dialogue written to the
case's scenario, labels them with the main pipeline's label stage, and stores the rows in the
table `testset_samples` of the build's DuckDB file.
"""
