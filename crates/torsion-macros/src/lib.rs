//! Attribute macros for torsion: `#[torsion::test]` (Twisted's trial running a test that
//! returns a Deferred) and `#[torsion::main]` (Twisted's `task.react`).
//!
//! Use them through the `torsion` crate, which re-exports them.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, Meta, Token, parse_macro_input};

/// Runs an `async fn` test on a fresh reactor, with a timeout (120 s unless
/// `timeout = SECS` says otherwise), failing it when the body fails, times out, leaves the
/// reactor dirty or drops a Failure unhandled (see `torsion::testing::run_test`).
///
/// The function may take the `Reactor` as its one argument and may return `()` or
/// `Result<(), Failure>`. With `all_backends`, the test is instantiated once per reactor
/// backend, as a module of tests named after the backends.
///
/// ```ignore
/// #[torsion::test(timeout = 5)]
/// async fn fires(reactor: Reactor) -> Result<(), Failure> {
///     let d = torsion::task::defer_later(&reactor, 0.01, || Ok(3));
///     assert_eq!(d.await?, 3);
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as ItemFn);
    let options = match parse_options(args) {
        Ok(options) => options,
        Err(err) => return err.to_compile_error().into(),
    };
    if input.sig.asyncness.is_none() {
        return syn::Error::new_spanned(&input.sig, "#[torsion::test] needs an `async fn`")
            .to_compile_error()
            .into();
    }
    let name = &input.sig.ident;
    let attrs = &input.attrs;
    let body = &input.block;
    let output = &input.sig.output;
    let reactor_arg = match input.sig.inputs.len() {
        0 => quote!(_reactor: ::torsion::Reactor),
        1 => match &input.sig.inputs[0] {
            FnArg::Typed(arg) => quote!(#arg),
            FnArg::Receiver(r) => {
                return syn::Error::new_spanned(r, "a test cannot take self")
                    .to_compile_error()
                    .into();
            }
        },
        _ => {
            return syn::Error::new_spanned(
                &input.sig.inputs,
                "a #[torsion::test] takes the Reactor or nothing",
            )
            .to_compile_error()
            .into();
        }
    };
    let timeout = options.timeout;
    let inner = format_ident!("__torsion_test_body");
    let body_fn = quote! {
        async fn #inner(#reactor_arg) #output #body
    };
    let expanded = if options.all_backends {
        quote! {
            #(#attrs)*
            mod #name {
                #[allow(unused_imports)]
                use super::*;
                #body_fn
                ::torsion::__test_each_backend! {
                    |kind| {
                        let reactor = ::torsion::Reactor::builder()
                            .backend(kind)
                            .build()
                            .expect("cannot build a reactor on this backend");
                        ::torsion::testing::run_test_on(
                            reactor,
                            ::std::time::Duration::from_secs_f64(#timeout),
                            #inner,
                        );
                    }
                }
            }
        }
    } else {
        quote! {
            #[test]
            #(#attrs)*
            fn #name() {
                #body_fn
                ::torsion::testing::run_test(
                    ::std::time::Duration::from_secs_f64(#timeout),
                    #inner,
                );
            }
        }
    };
    expanded.into()
}

/// Runs an `async fn main` on a reactor with signal handling and exits 0 on success, 1 on
/// failure (printing it), as Twisted's `task.react` does. `main` may take the `Reactor`.
///
/// ```ignore
/// #[torsion::main]
/// async fn main(reactor: Reactor) -> Result<(), Failure> {
///     torsion::task::defer_later(&reactor, 1.0, || Ok(())).await
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[torsion::main] takes no options",
        )
        .to_compile_error()
        .into();
    }
    let input = parse_macro_input!(item as ItemFn);
    if input.sig.asyncness.is_none() {
        return syn::Error::new_spanned(&input.sig, "#[torsion::main] needs an `async fn main`")
            .to_compile_error()
            .into();
    }
    let body = &input.block;
    let output = &input.sig.output;
    let attrs = &input.attrs;
    let reactor_arg = match input.sig.inputs.first() {
        Some(FnArg::Typed(arg)) => quote!(#arg),
        _ => quote!(_reactor: ::torsion::Reactor),
    };
    quote! {
        #(#attrs)*
        fn main() -> ::std::process::ExitCode {
            async fn __torsion_main(#reactor_arg) #output #body
            ::torsion::task::react(__torsion_main)
        }
    }
    .into()
}

struct Options {
    timeout: f64,
    all_backends: bool,
}

fn parse_options(args: TokenStream) -> syn::Result<Options> {
    let mut options = Options {
        timeout: 120.0,
        all_backends: false,
    };
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse(args)?;
    for meta in metas {
        match &meta {
            Meta::Path(p) if p.is_ident("all_backends") => options.all_backends = true,
            Meta::NameValue(nv) if nv.path.is_ident("timeout") => {
                options.timeout = match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => i.base10_parse::<u64>()? as f64,
                    Expr::Lit(ExprLit {
                        lit: Lit::Float(f), ..
                    }) => f.base10_parse::<f64>()?,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "timeout must be a number of seconds",
                        ));
                    }
                };
                if options.timeout.is_nan() || options.timeout <= 0.0 {
                    return Err(syn::Error::new_spanned(
                        &nv.value,
                        "timeout must be positive",
                    ));
                }
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    meta,
                    "unknown option: expected `timeout = SECS` or `all_backends`",
                ));
            }
        }
    }
    Ok(options)
}
