"""Training's ground floor: the data. Cohorts of real cases and phantoms, slices on the model grid, augmentation,
batch sampling, label quality. Imports nothing else of Training."""
