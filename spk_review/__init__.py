"""The security review harness behind `spk review`.

One report of what is trusted, who can reach what, what was measured and which
attacks were tried against a system description, with what result.
"""
