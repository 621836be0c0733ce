"""simcompress.batch"""
