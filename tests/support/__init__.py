"""What the tests share and do not test: the fake GitHub, teacher and llama.cpp servers, a
throwaway PostgreSQL cluster, tiny models, sample files and the App under test."""
