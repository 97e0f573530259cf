//! Tests of the sim over real loopback HTTP.
