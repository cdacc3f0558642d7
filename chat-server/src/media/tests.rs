use std::time::Instant;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{Rgb, RgbImage, Rgba, RgbaImage};

use super::*;

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

/// A picture with detail, so that encoders do real work and sizes mean
/// something.
fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(gradient(width, height)),
        ImageFormat::Jpeg,
    )
}

fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("a thumbnail decodes")
}

fn inspect(bytes: &[u8]) -> ImageInfo {
    inspect_image(bytes, &ImageLimits::default()).expect("inspects")
}

/// Checks what a thumbnail claims against what its bytes decode to.
fn thumbnail(info: &ImageInfo) -> &Thumbnail {
    let thumb = info.thumbnail.as_ref().expect("a thumbnail");
    let decoded = decode(&thumb.bytes);
    assert_eq!(
        (decoded.width(), decoded.height()),
        (thumb.width, thumb.height)
    );
    assert_eq!(sniff(&thumb.bytes), thumb.content_type);
    thumb
}

/// An APP1 Exif segment whose only entry is the orientation, followed by
/// `padding` zero bytes (as an embedded preview would take room).
fn exif_segment(orientation: u8, padding: usize) -> Vec<u8> {
    let mut payload = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    payload.extend_from_slice(&[0, 1]); // one entry
    payload.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0]);
    payload.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    payload.resize(payload.len() + padding, 0);
    segment(0xe1, &payload)
}

fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 2).expect("a segment is at most 64 KiB");
    let mut out = vec![0xff, marker];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `jpeg` with `segments` inserted after its JFIF APP0, where a camera
/// writes them.
fn with_segments(jpeg: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
    assert_eq!(&jpeg[..4], &[0xff, 0xd8, 0xff, 0xe0]);
    let app0_end = 4 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let mut out = jpeg[..app0_end].to_vec();
    for s in segments {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&jpeg[app0_end..]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A grey PNG of zeros, compressed by image's encoder: a real file
/// that is tiny for its pixel count.
fn zero_png(width: u32, height: u32) -> Vec<u8> {
    let pixels = vec![0u8; width as usize * height as usize];
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, width, height, image::ExtendedColorType::L8)
        .expect("encodes");
    out
}

// sniff, is_image, inline_safe

#[test]
fn sniff_knows_images_by_their_bytes() {
    let picture = DynamicImage::ImageRgb8(gradient(8, 8));
    for (format, expected) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let bytes = encode(&picture, format);
        assert_eq!(sniff(&bytes), expected, "{format:?}");
        assert!(is_image(&sniff(&bytes)));
        assert!(inline_safe(&sniff(&bytes)));
    }
}

#[test]
fn sniff_knows_documents_and_archives() {
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    assert_eq!(sniff(pdf), "application/pdf");
    assert!(!inline_safe("application/pdf"));

    let mut zip = b"PK\x03\x04\x14\0\0\0\x08\0".to_vec();
    zip.resize(64, 0);
    assert_eq!(sniff(&zip), "application/zip");
    assert!(!inline_safe("application/zip"));
}

#[test]
fn sniff_calls_utf8_text_plain_even_cut_mid_character() {
    let text = "naïve café — ünïcödé\n".repeat(10);
    assert_eq!(sniff(text.as_bytes()), "text/plain; charset=utf-8");
    // "—" is three bytes: cut after its first and after its second.
    let dash = text.find('—').expect("has a dash");
    assert_eq!(
        sniff(&text.as_bytes()[..dash + 1]),
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        sniff(&text.as_bytes()[..dash + 2]),
        "text/plain; charset=utf-8"
    );
    assert!(!is_image("text/plain; charset=utf-8"));
    assert!(!inline_safe("text/plain; charset=utf-8"));
}

#[test]
fn sniff_calls_binary_and_empty_octet_stream() {
    assert_eq!(sniff(b""), "application/octet-stream");
    // Invalid UTF-8 inside, not at the cut.
    assert_eq!(sniff(b"abc\xff\xfedef"), "application/octet-stream");
    // Valid UTF-8 but with NUL: binary (UTF-16 text is this too).
    assert_eq!(sniff(b"h\0e\0l\0l\0o\0"), "application/octet-stream");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(sniff(&noise), "application/octet-stream");
}

#[test]
fn markup_is_never_inline() {
    let html =
        b"<!DOCTYPE html>\n<html><head><script>alert(document.cookie)</script></head></html>";
    let svg = br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    let bare_svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>"#;
    // infer says text/html and text/xml: the honest types, kept; what
    // matters is that none of them is shown inline.
    assert_eq!(sniff(html), "text/html");
    assert_eq!(sniff(svg), "text/xml");
    assert_eq!(sniff(bare_svg), "text/plain; charset=utf-8");
    for content_type in [
        sniff(html),
        sniff(svg),
        sniff(bare_svg),
        "text/html; charset=utf-8".to_owned(),
        "image/svg+xml".to_owned(),
        "application/xhtml+xml".to_owned(),
        "text/xml".to_owned(),
        "application/xml".to_owned(),
        "application/javascript".to_owned(),
    ] {
        assert!(!inline_safe(&content_type), "{content_type}");
        assert!(!is_image(&content_type), "{content_type}");
        assert!(content_disposition("x", &content_type).starts_with("attachment;"));
    }
}

#[test]
fn inline_types() {
    for content_type in [
        "image/png",
        "IMAGE/JPEG",
        "image/gif",
        "image/webp",
        "audio/mpeg",
        "video/mp4",
        "video/webm; codecs=vp9",
    ] {
        assert!(inline_safe(content_type), "{content_type}");
    }
    for content_type in [
        "image/bmp",
        "image/tiff",
        "image/svg+xml",
        "application/octet-stream",
        "",
    ] {
        assert!(!inline_safe(content_type), "{content_type}");
        assert!(!is_image(content_type), "{content_type}");
    }
}

// inspect_image

#[test]
fn jpeg_thumbnail_keeps_the_aspect_ratio() {
    let bytes = jpeg(1000, 600);
    assert_eq!(dimensions(&bytes), Some((1000, 600)));
    let info = inspect(&bytes);
    assert_eq!((info.width, info.height), (1000, 600));
    let thumb = thumbnail(&info);
    assert_eq!((thumb.width, thumb.height), (320, 192));
    assert_eq!(thumb.content_type, "image/jpeg");
    println!(
        "1000×600 JPEG {} B → thumbnail {} B",
        bytes.len(),
        thumb.bytes.len()
    );
}

#[test]
fn transparent_png_gets_a_png_thumbnail() {
    let image = RgbaImage::from_fn(500, 1000, |x, y| Rgba([200, 30, 30, ((x + y) % 256) as u8]));
    let bytes = encode(&DynamicImage::ImageRgba8(image), ImageFormat::Png);
    assert_eq!(dimensions(&bytes), Some((500, 1000)));
    let info = inspect(&bytes);
    assert_eq!((info.width, info.height), (500, 1000));
    let thumb = thumbnail(&info);
    assert_eq!((thumb.width, thumb.height), (160, 320));
    assert_eq!(thumb.content_type, "image/png");
    assert!(decode(&thumb.bytes).color().has_alpha());
    println!(
        "500×1000 RGBA PNG {} B → thumbnail {} B",
        bytes.len(),
        thumb.bytes.len()
    );
}

#[test]
fn opaque_rgba_png_gets_a_jpeg_thumbnail() {
    let image = RgbaImage::from_pixel(400, 400, Rgba([10, 20, 30, 255]));
    let bytes = encode(&DynamicImage::ImageRgba8(image), ImageFormat::Png);
    let thumb_type = thumbnail(&inspect(&bytes)).content_type;
    assert_eq!(thumb_type, "image/jpeg");
}

#[test]
fn gif_and_webp() {
    let picture = DynamicImage::ImageRgb8(gradient(400, 300));
    for format in [ImageFormat::Gif, ImageFormat::WebP] {
        let bytes = encode(&picture, format);
        assert_eq!(dimensions(&bytes), Some((400, 300)), "{format:?}");
        let info = inspect(&bytes);
        assert_eq!((info.width, info.height), (400, 300), "{format:?}");
        let thumb = thumbnail(&info);
        assert_eq!((thumb.width, thumb.height), (320, 240), "{format:?}");
        assert_eq!(thumb.content_type, "image/jpeg", "{format:?}");
    }
}

#[test]
fn animated_gif_gives_its_first_frame() {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame};
    let frame = |colour: [u8; 4]| {
        Frame::from_parts(
            RgbaImage::from_pixel(60, 40, Rgba(colour)),
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        )
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        encoder
            .encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])])
            .expect("encodes");
    }
    let info = inspect(&bytes);
    assert_eq!((info.width, info.height), (60, 40));
    let first = decode(&thumbnail(&info).bytes).to_rgb8();
    let Rgb([r, _, b]) = *first.get_pixel(30, 20);
    assert!(r > 200 && b < 50, "the first (red) frame, got {r},{b}");
}

#[test]
fn small_image_is_re_encoded_at_its_own_size() {
    let bytes = encode(
        &DynamicImage::ImageRgb8(gradient(100, 50)),
        ImageFormat::Png,
    );
    let info = inspect(&bytes);
    let thumb = thumbnail(&info);
    assert_eq!((thumb.width, thumb.height), (100, 50));
    assert_eq!(thumb.content_type, "image/jpeg");
    assert_ne!(thumb.bytes, bytes);
}

#[test]
fn exif_orientation_6_stands_the_picture_upright() {
    // Stored 200×100, left half red, right half blue. Orientation 6 means
    // "turn 90° clockwise to display": the left column becomes the top row.
    let stored = RgbImage::from_fn(200, 100, |x, _| {
        if x < 100 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let plain = encode(&DynamicImage::ImageRgb8(stored), ImageFormat::Jpeg);
    let bytes = with_segments(&plain, &[exif_segment(6, 0)]);

    assert_eq!(dimensions(&plain), Some((200, 100)));
    assert_eq!(dimensions(&bytes), Some((100, 200)));
    let info = inspect(&bytes);
    assert_eq!((info.width, info.height), (100, 200));
    let thumb = thumbnail(&info);
    assert_eq!((thumb.width, thumb.height), (100, 200));
    let upright = decode(&thumb.bytes).to_rgb8();
    let Rgb([r, _, b]) = *upright.get_pixel(50, 20);
    assert!(r > 200 && b < 60, "red on top, got {r},{b}");
    let Rgb([r, _, b]) = *upright.get_pixel(50, 180);
    assert!(b > 200 && r < 60, "blue below, got {r},{b}");
}

#[test]
fn dimensions_of_a_jpeg_behind_large_app_segments() {
    // A camera-like head: a full 64 KiB Exif segment (preview included),
    // then a 40 KB XMP segment, and the frame header only after them.
    let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    xmp.resize(40_000, b' ');
    let bytes = with_segments(
        &jpeg(1000, 600),
        &[exif_segment(6, 65_000), segment(0xe1, &xmp)],
    );
    let frame_header = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a SOF0");
    assert!(frame_header > 100_000, "SOF at {frame_header}");
    assert!(bytes.len() > SNIFF_BYTES, "{} bytes", bytes.len());

    assert_eq!(dimensions(&bytes[..SNIFF_BYTES]), Some((600, 1000)));
    // 64 KiB would not have been enough.
    assert_eq!(dimensions(&bytes[..64 * 1024]), None);
    assert_eq!(sniff(&bytes[..SNIFF_BYTES]), "image/jpeg");
}

#[test]
fn dimensions_of_what_is_not_an_image() {
    assert_eq!(dimensions(b""), None);
    assert_eq!(dimensions(b"hello"), None);
    assert_eq!(dimensions(b"%PDF-1.7\n"), None);
    let png = encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png);
    assert_eq!(dimensions(&png[..20]), None, "IHDR cut");
    assert_eq!(dimensions(&png), Some((30, 20)));
}

#[test]
fn truncated_or_garbled_jpeg_is_invalid() {
    let bytes = jpeg(300, 200);
    let frame_header = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a SOF0");
    // Cut before the frame header: no size to read.
    assert!(matches!(
        inspect_image(&bytes[..frame_header], &ImageLimits::default()),
        Err(ImageError::Invalid(_))
    ));
    // The JPEG magic, then garbage.
    let mut garbled = bytes[..4].to_vec();
    garbled.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8));
    assert!(matches!(
        inspect_image(&garbled, &ImageLimits::default()),
        Err(ImageError::Invalid(_))
    ));
    // Not an image at all.
    assert!(matches!(
        inspect_image(b"%PDF-1.7\n", &ImageLimits::default()),
        Err(ImageError::Invalid(_))
    ));
}

// Decompression bombs

#[test]
fn png_claiming_ten_billion_pixels_is_refused_from_its_header() {
    // A valid IHDR (CRC and all) for 100000×100000 RGBA, then the IDAT of a
    // 1×1 image: 40 GB of pixels claimed by a 100-byte file.
    let tiny = encode(
        &DynamicImage::ImageRgba8(RgbaImage::new(1, 1)),
        ImageFormat::Png,
    );
    let idat_at = tiny.windows(4).position(|w| w == b"IDAT").expect("an IDAT") - 4;
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, not interlaced
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend(png_chunk(b"IHDR", &ihdr));
    bomb.extend_from_slice(&tiny[idat_at..]);
    assert!(bomb.len() < 200, "{} bytes", bomb.len());
    assert_eq!(sniff(&bomb), "image/png");
    assert_eq!(dimensions(&bomb), Some((100_000, 100_000)));

    let started = Instant::now();
    let result = inspect_image(&bomb, &ImageLimits::default());
    assert!(
        matches!(
            result,
            Err(ImageError::TooLarge {
                width: 100_000,
                height: 100_000
            })
        ),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn real_png_bomb_is_refused_before_decoding() {
    // A genuine 10000×10000 grey PNG: 100 M pixels in about 100 KB.
    let started = Instant::now();
    let bomb = zero_png(10_000, 10_000);
    println!(
        "10000×10000 bomb: {} B, made in {:?}",
        bomb.len(),
        started.elapsed()
    );
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    assert_eq!(dimensions(&bomb), Some((10_000, 10_000)));

    let started = Instant::now();
    let result = inspect_image(&bomb, &ImageLimits::default());
    assert!(
        matches!(
            result,
            Err(ImageError::TooLarge {
                width: 10_000,
                height: 10_000
            })
        ),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn side_and_allocation_limits() {
    let strip = zero_png(30_000, 1);
    let result = inspect_image(&strip, &ImageLimits::default());
    assert!(
        matches!(
            result,
            Err(ImageError::TooLarge {
                width: 30_000,
                height: 1
            })
        ),
        "{result:?}"
    );

    // Within the pixel limit, over the allocation cap: 16 MB of output.
    let big = zero_png(4000, 4000);
    let limits = ImageLimits {
        max_alloc: 8 * 1024 * 1024,
        ..ImageLimits::default()
    };
    let result = inspect_image(&big, &limits);
    assert!(
        matches!(
            result,
            Err(ImageError::TooLarge {
                width: 4000,
                height: 4000
            })
        ),
        "{result:?}"
    );
}

// The async wrapper

#[tokio::test]
async fn async_inspect_answers_and_times_out() {
    let bytes = bytes::Bytes::from(jpeg(1000, 600));
    let info = inspect_image_async(bytes.clone(), ImageLimits::default())
        .await
        .expect("inspects");
    assert_eq!((info.width, info.height), (1000, 600));

    let limits = ImageLimits {
        timeout: Duration::from_micros(1),
        ..ImageLimits::default()
    };
    let result = inspect_image_async(bytes, limits).await;
    assert!(matches!(result, Err(ImageError::Timeout)), "{result:?}");
}

/// The figures for a phone photo; `--nocapture` shows them.
#[test]
fn twelve_megapixel_jpeg() {
    let bytes = jpeg(4000, 3000);
    let started = Instant::now();
    let info = inspect(&bytes);
    let took = started.elapsed();
    let thumb = thumbnail(&info);
    assert_eq!((thumb.width, thumb.height), (320, 240));
    println!(
        "4000×3000 JPEG {} B: inspect_image {took:?}, thumbnail {} B",
        bytes.len(),
        thumb.bytes.len()
    );
}

// Names and headers

#[test]
fn safe_file_names() {
    assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
    assert_eq!(safe_file_name("C:\\x\\y.png"), "y.png");
    assert_eq!(safe_file_name("dir/sub\\mixed/name.txt"), "name.txt");
    assert_eq!(safe_file_name(""), "file");
    assert_eq!(safe_file_name("."), "file");
    assert_eq!(safe_file_name(".."), "file");
    assert_eq!(safe_file_name("a/"), "file");
    assert_eq!(safe_file_name("   "), "file");
    assert_eq!(safe_file_name("\u{0}\u{7}\n"), "file");
    assert_eq!(safe_file_name("  re\u{0}port\r\n.pdf\t "), "report.pdf");
    assert_eq!(safe_file_name("say \"hi\".txt"), "say hi.txt");
    assert_eq!(safe_file_name("Bob's notes.txt"), "Bob's notes.txt");
    assert_eq!(safe_file_name("naïve résumé.pdf"), "naïve résumé.pdf");
    assert_eq!(safe_file_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
    assert_eq!(safe_file_name("\u{85}x\u{9f}"), "x", "C1 controls");
}

#[test]
fn long_names_are_cut_keeping_the_extension() {
    let long = format!("{}.png", "a".repeat(400));
    let safe = safe_file_name(&long);
    assert_eq!(safe.len(), 255);
    assert!(safe.ends_with("aaa.png"), "{safe}");

    // Multi-byte characters are not split.
    let long = format!("{}.png", "é".repeat(200));
    let safe = safe_file_name(&long);
    assert!(safe.ends_with("é.png"), "{safe}");
    assert_eq!(safe.len(), 254, "125 two-byte é and .png");

    // No extension worth keeping: a plain cut.
    let long = format!("x.{}", "b".repeat(400));
    assert_eq!(safe_file_name(&long), format!("x.{}", "b".repeat(253)));

    let exact = "c".repeat(255);
    assert_eq!(safe_file_name(&exact), exact);
}

#[test]
fn content_disposition_header() {
    assert_eq!(
        content_disposition("naïve résumé.pdf", "application/pdf"),
        "attachment; filename=\"na_ve r_sum_.pdf\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf"
    );
    assert_eq!(
        content_disposition("cat.png", "image/png"),
        "inline; filename=\"cat.png\"; filename*=UTF-8''cat.png"
    );
    assert_eq!(
        content_disposition("../a\\b\"c\".txt", "text/plain; charset=utf-8"),
        "attachment; filename=\"bc.txt\"; filename*=UTF-8''bc.txt"
    );
    assert_eq!(
        content_disposition("Bob's 100%;x.mp4", "video/mp4"),
        "inline; filename=\"Bob's 100_;x.mp4\"; filename*=UTF-8''Bob%27s%20100%25%3Bx.mp4"
    );
}
