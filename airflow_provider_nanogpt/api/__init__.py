"""NanoGPT wire protocol: request building, response normalisation, error mapping and retry policy.

Pure code shared by the sync (requests) and async (httpx) paths of the hook; nothing here does I/O.
"""
