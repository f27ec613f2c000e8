"""What nnunetv2_cipa writes into and checks in nnU-Net's plans and dataset files.

``network_entry``: the network settings a CIPA trainer stores in the plans (so prediction rebuilds the
trained network). The normalisation guard and the fixed-window tool live beside it.
"""
