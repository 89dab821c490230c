"""The generic search engine: persistent run store and evolutionary loop, independent of the domain."""
