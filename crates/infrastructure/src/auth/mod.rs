//! Token verification and (for development) signing.

mod claims;
mod composite;
mod hs256;
mod jwks;

pub use claims::JwtRules;
pub use composite::JwtVerifier;
pub use hs256::{DevTokenRequest, HsJwtSigner, HsJwtVerifier};
pub use jwks::{JwksSettings, JwksVerifier};
