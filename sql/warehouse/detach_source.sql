-- Done copying from the live warehouse.
detach source
