DROP TABLE key_states;
