"""Training's middle floor: the two stages' training. EssNet (CycleGAN + segmenter), its losses and image pool, the
stage-2 U-Nets and their training-only heads, the loop, checkpoints, schedules, weight averages, distributed
training. Stands on ``data`` only."""
