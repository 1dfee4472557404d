//! Performance-regression benches (see issue: benches).
