"""The input-data layer: drift of the traffic's features against the training reference,
null features, prediction shift (``checks``, ``inputs``, ``report``) and the diagnosis
findings built from them (``findings``)."""
