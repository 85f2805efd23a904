"""hmrflow.pipeline: data types, the Stage protocol, runners, config, IO. Imports no model code."""
