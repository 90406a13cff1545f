//! Token verification and (for development) signing.

mod hs256;

pub use hs256::{DevTokenRequest, HsJwtSigner, HsJwtVerifier, JwtRules};
