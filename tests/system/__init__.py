"""What cuts across the package: end to end, hostile input and safety, resume, layout, docs, CUDA."""
