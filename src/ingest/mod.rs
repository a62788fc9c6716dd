pub mod body;
pub mod signature;
