//! Protocol parsers over sampled payloads. Being written.
