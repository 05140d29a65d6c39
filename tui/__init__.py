"""nanotui's terminal app and command line. Builds engine objects and injects them."""
