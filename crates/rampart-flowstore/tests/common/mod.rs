pub mod env;
pub mod fold;
pub mod gen;
