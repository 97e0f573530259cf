//! `corral sim`: a simulated Ollama server, wire-faithful enough for the official clients.
