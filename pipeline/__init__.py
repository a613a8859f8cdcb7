"""Everything around the model: decoding, detection, tracking, inference on Ray, Parquet."""
