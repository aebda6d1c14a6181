"""nipype workflows: ``init_*_wf`` functions returning workflows, as in the NiPreps tools."""
